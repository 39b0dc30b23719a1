"""Mutation fuzzing of every file format openformers reads, run in a child process.

``python -m tests.security.fuzz_child --cases N --out results.json [--formats a,b]`` builds one
valid file (or folder) per format, then for each case mutates a fresh copy at random (bytes
flipped, truncated, JSON fields replaced by wrong types or huge values) and loads it. Each
outcome is recorded as ``ok`` (loaded), ``refused`` (an error of the library's own kinds whose
message names the file or the field) or ``unexpected`` (anything else: another exception type,
an error that names nothing, a load slower than the time bound). The parent test runs this
under an address-space limit, so an unbounded allocation shows up as ``MemoryError``
(unexpected) or a killed child, and a crash as a non-zero exit status.
"""
from __future__ import annotations

import argparse
import copy
import json
import random
import re
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

CASE_SECONDS = 20.0
HUGE = [2**31, 2**63 - 1, 2**64, -1, -(2**63), 10**30, 1e308, float("nan")]
WRONG = ["abc", "", None, True, [], {}, [1, 2], {"a": 1}, 3.5, "../../etc/passwd", "/etc/passwd", "\u0000"]


# -- mutations ----------------------------------------------------------------------------------
def flip_bytes(data: bytes, rng: random.Random, region: int | None = None) -> bytes:
    buf = bytearray(data)
    end = min(len(buf), region or len(buf))
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(end)
        buf[i] = rng.randrange(256) if rng.random() < 0.5 else buf[i] ^ (1 << rng.randrange(8))
    return bytes(buf)


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data))]


def mutate_bytes(data: bytes, rng: random.Random, region: int | None = None) -> bytes:
    return truncate(data, rng) if rng.random() < 0.3 else flip_bytes(data, rng, region)


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:20]):
            out += _paths(v, prefix + (i,))
    return out


def mutate_json(obj: Any, rng: random.Random) -> Any:
    """Replace 1-3 values anywhere in the tree by wrong types or huge numbers (or delete them)."""
    obj = copy.deepcopy(obj)
    paths = _paths(obj)
    for _ in range(rng.randint(1, 3)):
        if not paths:
            break
        path = rng.choice(paths)
        parent = obj
        for key in path[:-1]:
            parent = parent[key]
        choice = rng.random()
        try:
            if choice < 0.1 and isinstance(parent, dict):
                del parent[path[-1]]
            else:
                parent[path[-1]] = copy.deepcopy(rng.choice(HUGE if choice < 0.55 else WRONG))
        except (KeyError, IndexError, TypeError):
            pass
        paths = _paths(obj)
    return obj


def mutate_json_file(path: Path, rng: random.Random) -> None:
    if rng.random() < 0.75:
        path.write_text(json.dumps(mutate_json(json.loads(path.read_text()), rng)))
    else:
        path.write_bytes(mutate_bytes(path.read_bytes(), rng))


# -- the formats: (build a valid sample in a folder, mutate it, load it) ------------------------
def _tiny_gpt2(folder: Path) -> None:
    import torch

    from openformers.models.gpt2 import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=16, n_layer=2, n_head=2, n_positions=32)).save_pretrained(folder)


def build_safetensors(folder: Path) -> None:
    import torch
    from safetensors.torch import save_file

    save_file({"a.weight": torch.ones(4, 8), "b.bias": torch.arange(6, dtype=torch.int64), "c": torch.zeros(2, dtype=torch.float16)},
              str(folder / "model.safetensors"))


def mutate_safetensors(folder: Path, rng: random.Random) -> None:
    file = folder / "model.safetensors"
    data = file.read_bytes()
    n = int.from_bytes(data[:8], "little")
    if rng.random() < 0.5:  # rewrite the JSON header with wrong types or huge values
        header = mutate_json(json.loads(data[8 : 8 + n]), rng)
        raw = json.dumps(header).encode()
        data = len(raw).to_bytes(8, "little") + raw + data[8 + n :]
    else:
        data = mutate_bytes(data, rng, region=8 + n)
    file.write_bytes(data)


def load_safetensors(folder: Path) -> None:
    from openformers.core.checkpoint import iter_checkpoint, safetensors_shapes

    files = [folder / "model.safetensors"]
    safetensors_shapes(files)
    for _, tensor in iter_checkpoint(files):
        tensor.sum()


def build_gguf(folder: Path) -> None:
    from tests.security.ggufs import write_llama_gguf

    write_llama_gguf(folder / "model.gguf", hidden=32, intermediate=64, layers=1, heads=2, kv_heads=1, vocab=64, qtype="Q4_0")


def mutate_gguf(folder: Path, rng: random.Random) -> None:
    file = folder / "model.gguf"
    data = file.read_bytes()
    file.write_bytes(mutate_bytes(data, rng, region=min(len(data), 4096)))


def load_gguf(folder: Path) -> None:
    from openformers.models.gguf_loading import read_gguf_model
    from openformers.quantization.gguf_linear import GGUFQuantizationConfig
    from openformers.tokenization.gguf import tokenizer_from_gguf

    file = folder / "model.gguf"
    for quantization in (None, GGUFQuantizationConfig()):
        config, tensors = read_gguf_model(file, quantization_config=quantization)
        for _, tensor in tensors:
            tensor.sum()
    tokenizer_from_gguf(file)


def build_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "h": 1, "e": 2, "l": 3, "o": 4, "he": 5, "ll": 6, "hell": 7, "hello": 8}
    merges = [("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o")]
    tok = Tokenizer(models.BPE(vocab, merges, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"unk_token": "[UNK]", "model_max_length": 16, "chat_template": "{{ messages[0]['content'] }}"}))


def mutate_tokenizer(folder: Path, rng: random.Random) -> None:
    mutate_json_file(folder / ("tokenizer.json" if rng.random() < 0.7 else "tokenizer_config.json"), rng)


def load_tokenizer(folder: Path) -> None:
    from openformers.tokenization.auto import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    ids = tok("hello hello")["input_ids"]
    tok.decode(ids)


def build_config(folder: Path) -> None:
    _tiny_gpt2(folder)


def mutate_config(folder: Path, rng: random.Random) -> None:
    mutate_json_file(folder / "config.json", rng)


def load_config(folder: Path) -> None:
    from openformers.models.auto import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(str(folder))


def build_adapter(folder: Path) -> None:
    _tiny_gpt2(folder / "base")
    (folder / "adapter").mkdir()
    (folder / "adapter" / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 2, "lora_alpha": 4, "lora_dropout": 0.0,
        "target_modules": ["c_attn"], "bias": "none", "fan_in_fan_out": True,
        "rank_pattern": {"c_attn": 2}, "alpha_pattern": {}, "modules_to_save": None}))


def mutate_adapter(folder: Path, rng: random.Random) -> None:
    mutate_json_file(folder / "adapter" / "adapter_config.json", rng)


def load_adapter(folder: Path) -> None:
    from openformers.models.gpt2 import GPT2LMHeadModel
    from openformers.peft import get_peft_model
    from openformers.peft.config import PeftConfig

    config = PeftConfig.from_pretrained(folder / "adapter")
    get_peft_model(GPT2LMHeadModel.from_pretrained(folder / "base"), config)


def build_text(folder: Path) -> None:
    (folder / "data.csv").write_text("text,label,score\nhello world,1,0.5\n\"quoted, text\",0,1.5\ncafé ünïcode,1,2\n")
    (folder / "data.jsonl").write_text('{"text": "hello", "label": 1}\n{"text": "café", "label": 0, "extra": [1, 2]}\n')


def mutate_text(folder: Path, rng: random.Random) -> None:
    for name in ("data.csv", "data.jsonl"):
        file = folder / name
        file.write_bytes(mutate_bytes(file.read_bytes(), rng))


def load_text(folder: Path) -> None:
    from openformers.data import load_dataset

    for kind, name in (("csv", "data.csv"), ("json", "data.jsonl")):
        load_dataset(kind, data_files=str(folder / name), split="train", keep_in_memory=True)


FORMATS: dict[str, tuple[Callable, Callable, Callable]] = {
    "safetensors": (build_safetensors, mutate_safetensors, load_safetensors),
    "gguf": (build_gguf, mutate_gguf, load_gguf),
    "tokenizer": (build_tokenizer, mutate_tokenizer, load_tokenizer),
    "config": (build_config, mutate_config, load_config),
    "adapter": (build_adapter, mutate_adapter, load_adapter),
    "text": (build_text, mutate_text, load_text),
}


def _allowed(exc: BaseException, folder: Path) -> bool:
    """An error of the library's own kinds that names the file (or the folder, field or argument)."""
    from openformers.core.checkpoint import CheckpointError
    from openformers.core.hub import UnsafePathError

    if isinstance(exc, (CheckpointError, UnsafePathError)):
        return True
    if type(exc) in (ValueError, FileNotFoundError) or isinstance(exc, ValueError) and type(exc).__module__.startswith("openformers"):
        text = str(exc)  # names the file, or the field or argument (``name=value``, "config field ...")
        return str(folder) in text or "config field" in text or re.search(r"\b[a-z_]+ ?=", text) is not None
    return False


def run(formats: list[str], cases: int, seed: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in formats:
            build, mutate, load = FORMATS[name]
            sample = Path(tmp) / f"{name}-sample"
            sample.mkdir()
            build(sample)
            load(sample)  # the valid sample must load
            counts = {"ok": 0, "refused": 0}
            unexpected: list[dict[str, Any]] = []
            slowest = 0.0
            for case in range(cases):
                rng = random.Random(f"{seed}-{name}-{case}")
                folder = Path(tmp) / f"{name}-{case}"
                shutil.copytree(sample, folder)
                mutate(folder, rng)
                start = time.perf_counter()
                try:
                    load(folder)
                    outcome = "ok"
                except BaseException as exc:  # noqa: BLE001 - classifying every outcome is the point
                    if isinstance(exc, KeyboardInterrupt):
                        raise
                    outcome = "refused" if _allowed(exc, folder) else "unexpected"
                    if outcome == "unexpected":
                        unexpected.append({"case": case, "type": type(exc).__name__, "message": str(exc)[:300],
                                           "where": traceback.format_exc().splitlines()[-3:-1]})
                took = time.perf_counter() - start
                slowest = max(slowest, took)
                if took > CASE_SECONDS:
                    unexpected.append({"case": case, "type": "slow", "message": f"{took:.1f} s"})
                if outcome != "unexpected":
                    counts[outcome] += 1
                shutil.rmtree(folder, ignore_errors=True)
            results[name] = {**counts, "unexpected": unexpected, "slowest_s": round(slowest, 3)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    import logging

    logging.disable(logging.WARNING)
    results = run(args.formats.split(","), args.cases, args.seed)
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
