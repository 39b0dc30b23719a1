"""Find and read a checkpoint's tokenizer files and build the tokenizer front-end."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from ..core.hub import EMBEDDED_MODELS, contained_path, embedded_model_path, find_file, resolve_model_dir

# files that can define the vocabulary, in order of preference
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json + merges.txt", "tokenizer.model")
# tokenizer classes whose models take token_type_ids (the others get input_ids + attention_mask)
TOKEN_TYPE_FAMILIES = {"bert", "electra", "albert", "convbert", "mobilebert", "squeezebert", "funnel", "deberta",
                       "deberta_v2", "debertav2", "xlnet", "layoutlm", "splinter", "roformer", "mpnet_legacy"}
_HUB_KWARGS = ("revision", "local_files_only", "cache_dir", "token")
_IGNORED_KWARGS = ("use_fast", "force_download", "resume_download", "proxies", "_from_auto",
                   "_commit_hash", "use_auth_token", "legacy", "from_slow", "fix_mistral_regex", "config",
                   "mirror", "_from_pipeline", "tqdm_class")


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); fix or delete the file") from exc
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply; fix or delete the file") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} should hold a JSON object, found {type(data).__name__}")
    return data


def read_tokenizer_json(path: Path) -> Tokenizer:
    """Load tokenizer.json, turning the engine's parse errors into a message that names the file."""
    try:
        return Tokenizer.from_file(str(path))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # the engine's panics (pyo3 PanicException) derive from BaseException
        raise ValueError(
            f"could not read {path}: it is not a valid tokenizers file ({exc}). The file is corrupt or was "
            "written by an incompatible program; re-save the tokenizer or delete tokenizer.json so that "
            "vocab.txt / vocab.json+merges.txt / tokenizer.model are used instead."
        ) from exc


def read_tokenizer_config(directory: Path) -> dict[str, Any]:
    """tokenizer_config.json merged with special_tokens_map.json and chat_template.jinja/.json."""
    config: dict[str, Any] = {}
    path = find_file(directory, "tokenizer_config.json")
    if path is not None:
        config = read_json(path)
    specials = find_file(directory, "special_tokens_map.json")
    if specials is not None:
        for key, value in read_json(specials).items():
            config.setdefault(key, value)  # tokenizer_config.json wins
    jinja = find_file(directory, "chat_template.jinja")
    if jinja is not None:
        config["chat_template"] = jinja.read_text(encoding="utf-8")
    else:
        template_json = find_file(directory, "chat_template.json")
        if template_json is not None:
            config["chat_template"] = read_json(template_json).get("chat_template")
    return check_tokenizer_config(config, directory)


def check_tokenizer_config(config: dict[str, Any], source: Path | str) -> dict[str, Any]:
    """Settings of the wrong type are refused naming the field (``ValueError``), not met later."""
    length = config.get("model_max_length")
    if length is not None and (type(length) not in (int, float) or length != length or length < 0 or length == float("inf")):
        raise ValueError(f"{source}: model_max_length = {length!r} must be a non-negative number (the longest input the model takes)")
    template = config.get("chat_template")
    named = isinstance(template, list) and all(
        isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("template"), str) for t in template)
    if template is not None and not isinstance(template, str) and not named:
        raise ValueError(
            f"{source}: chat_template must be a string (a Jinja template) or a list of "
            f"{{\"name\": ..., \"template\": ...}} objects, got {type(template).__name__}"
        )
    for key in ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token"):
        value = config.get(key)
        if value is not None and not isinstance(value, str) and not (isinstance(value, dict) and isinstance(value.get("content"), str)):
            raise ValueError(f"{source}: {key} = {value!r} must be a string (or an AddedToken object with a 'content' string)")
    return config


def build_backend(directory: Path, config: dict[str, Any]) -> tuple[Tokenizer, dict[str, Any]]:
    """The backend tokenizer from the best file in ``directory``, and class defaults."""
    from . import converters

    tok_json = find_file(directory, "tokenizer.json")
    if tok_json is not None:
        family = converters.class_family(config.get("tokenizer_class"))
        defaults: dict[str, Any] = {}
        if family in TOKEN_TYPE_FAMILIES:
            defaults["model_input_names"] = ["input_ids", "token_type_ids", "attention_mask"]
        if family in {"llama", "mistral", "gemma", "code_llama", "codellama"}:
            defaults["padding_side"] = "left"
        return read_tokenizer_json(tok_json), defaults
    vocab_txt = find_file(directory, "vocab.txt")
    if vocab_txt is not None:
        return converters.bert_from_vocab(vocab_txt, config)
    vocab_json, merges = find_file(directory, "vocab.json"), find_file(directory, "merges.txt")
    if vocab_json is not None and merges is not None:
        return converters.byte_level_bpe(vocab_json, merges, config)
    sp_model = find_file(directory, "tokenizer.model", "spiece.model", "sentencepiece.bpe.model")
    if sp_model is not None:
        return converters.sentencepiece_tokenizer(sp_model, config)
    from ..core.hub import ModelNotFoundError

    gguf = sorted(directory.glob("*.gguf"))
    hint = f" It holds GGUF files; pass gguf_file={gguf[0].name!r}." if gguf else ""
    raise ModelNotFoundError(
        f"no tokenizer files in {directory}: looked for {', '.join(TOKENIZER_FILES)}.{hint}"
    )


def load_tokenizer(name_or_path: str | os.PathLike, tokenizer_cls: type | None = None, **kwargs: Any) -> Any:
    """Shared body of ``AutoTokenizer.from_pretrained`` and ``PreTrainedTokenizerFast.from_pretrained``."""
    from .base import PreTrainedTokenizerFast

    cls = tokenizer_cls or PreTrainedTokenizerFast
    if kwargs.pop("trust_remote_code", False):
        raise ValueError(
            "trust_remote_code=True is refused: openformers never runs code shipped with a checkpoint. "
            "Tokenizers load from tokenizer.json, vocab.txt, vocab.json+merges.txt, tokenizer.model or GGUF."
        )
    hub = {k: kwargs.pop(k) for k in _HUB_KWARGS if k in kwargs}
    for key in _IGNORED_KWARGS:
        kwargs.pop(key, None)
    gguf_file = kwargs.pop("gguf_file", None)
    name = os.fspath(name_or_path)
    if gguf_file is None and (name in EMBEDDED_MODELS or name.lower() in EMBEDDED_MODELS):
        embedded = embedded_model_path(name)
        if embedded.is_file():
            gguf_file = embedded.name
    if gguf_file is None and Path(name).is_file() and name.endswith(".gguf"):
        gguf_file = Path(name).name
    subfolder = kwargs.pop("subfolder", None) or ""
    directory = contained_path(resolve_model_dir(name_or_path, **hub), subfolder, "subfolder")
    if not directory.is_dir():
        raise FileNotFoundError(f"subfolder={subfolder!r}: {directory} is not a directory")
    if gguf_file is not None:
        from .gguf import tokenizer_from_gguf

        gguf_path = Path(gguf_file) if Path(gguf_file).is_absolute() else contained_path(directory, gguf_file, "gguf_file")
        if not gguf_path.is_file():
            raise FileNotFoundError(f"gguf_file={gguf_file!r}: no such file in {directory}")
        backend, config = tokenizer_from_gguf(gguf_path)
        config.update(kwargs)
        config.setdefault("name_or_path", name)
        return cls(_backend=backend, **config)
    config = read_tokenizer_config(directory)
    config.update(kwargs)  # call-site arguments win
    backend, defaults = build_backend(directory, config)
    for key, value in defaults.items():
        config.setdefault(key, value)
    for key in ("tokenizer_class", "auto_map", "tokenizer_file", "vocab_file", "merges_file"):
        config.pop(key, None)
    config["name_or_path"] = name
    return cls(_backend=backend, **config)
