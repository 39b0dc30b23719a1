"""BLEU tokenizers with sacrebleu's rules: "13a" (mteval-v13a), "intl" (mteval-v14), "char", "zh", "none"."""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Callable

# mteval-v13a: split ASCII punctuation and symbols; split . and , unless next to a digit;
# split a dash that follows a digit.
_RULES_13A = [
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),
]


def _regexp_rules(line: str) -> str:
    for pattern, repl in _RULES_13A:
        line = pattern.sub(repl, line)
    return " ".join(line.split())


@lru_cache(maxsize=2**16)
def tokenize_13a(line: str) -> str:
    """The default WMT tokenizer: unescape a few HTML entities, then the mteval-v13a rules."""
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    return _regexp_rules(f" {line} ")


def tokenize_none(line: str) -> str:
    """No tokenization: the line is split on whitespace only."""
    return line


@lru_cache(maxsize=2**16)
def tokenize_char(line: str) -> str:
    """Every character becomes a token (spaces included, as in sacrebleu)."""
    return " ".join(line)


@lru_cache(maxsize=2**16)
def _category(ch: str) -> str:
    return unicodedata.category(ch)[0]


def _pair_rule(line: str, first: Callable[[str], bool], second: Callable[[str], bool], left: bool) -> str:
    """Scan left to right like ``re.sub`` with a two-character pattern: where (a, b) matches,
    pad the punctuation (``b`` when ``left`` is False, ``a`` otherwise) and continue after b."""
    out, i, n = [], 0, len(line)
    while i < n:
        if i + 1 < n and first(line[i]) and second(line[i + 1]):
            out.append(f" {line[i]} {line[i + 1]}" if left else f"{line[i]} {line[i + 1]} ")
            i += 2
        else:
            out.append(line[i])
            i += 1
    return "".join(out)


def _is_punct(ch: str) -> bool:
    return _category(ch) == "P"


def _not_number(ch: str) -> bool:
    return _category(ch) != "N"


@lru_cache(maxsize=2**16)
def tokenize_intl(line: str) -> str:
    """mteval-v14 international tokenization: split Unicode punctuation and symbols,
    except punctuation between digits."""
    line = _pair_rule(line, _not_number, _is_punct, left=False)  # (non-number)(punct) -> "a p "
    line = _pair_rule(line, _is_punct, _not_number, left=True)  # (punct)(non-number) -> " p a"
    line = "".join(f" {ch} " if _category(ch) == "S" else ch for ch in line)
    return " ".join(line.split())


# Code point ranges treated as Chinese characters by sacrebleu's "zh" tokenizer. Two ranges are
# written in sacrebleu as 5-hex-digit \u escapes, which Python reads as a 4-digit escape plus a
# digit; the resulting string comparisons make them cover U+2001..U+2A6D and U+2F81..U+2FA1.
_ZH_RANGES = [
    (0x3400, 0x4DB5), (0x4E00, 0x9FA5), (0x9FA6, 0x9FBB), (0xF900, 0xFA2D), (0xFA30, 0xFA6A),
    (0xFA70, 0xFAD9), (0x2001, 0x2A6D), (0x2F81, 0x2FA1), (0xFF00, 0xFFEF), (0x2E80, 0x2EFF),
    (0x3000, 0x303F), (0x31C0, 0x31EF), (0x2F00, 0x2FDF), (0x2FF0, 0x2FFF), (0x3100, 0x312F),
    (0x31A0, 0x31BF), (0xFE10, 0xFE1F), (0xFE30, 0xFE4F), (0x2600, 0x26FF), (0x2700, 0x27BF),
    (0x3200, 0x32FF), (0x3300, 0x33FF),
]


def _is_chinese(ch: str) -> bool:
    cp = ord(ch)
    return any(a <= cp <= b for a, b in _ZH_RANGES)


@lru_cache(maxsize=2**16)
def tokenize_zh(line: str) -> str:
    """Chinese: every Chinese character is a token; other text follows the 13a rules."""
    spaced = "".join(f" {ch} " if _is_chinese(ch) else ch for ch in line.strip())
    return _regexp_rules(spaced)


TOKENIZERS: dict[str, Callable[[str], str]] = {
    "13a": tokenize_13a,
    "none": tokenize_none,
    "intl": tokenize_intl,
    "char": tokenize_char,
    "zh": tokenize_zh,
}


def get_tokenizer(name: str) -> Callable[[str], str]:
    """Tokenizer function by sacrebleu name."""
    if name not in TOKENIZERS:
        raise ValueError(f"Unknown BLEU tokenizer {name!r}; available: {', '.join(TOKENIZERS)}.")
    return TOKENIZERS[name]
