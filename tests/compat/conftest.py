"""Fixtures of the compatibility suite: tiny local models (built with transformers, so both stacks
load the same weights) and tiny data files standing in for the hub names and datasets the public
scripts use, plus a runner that executes a script once with openformers and once with its
imports switched back to the reference stack."""
from __future__ import annotations

import json
import os
import re
import runpy
import shutil
import sys
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).parent / "scripts"
SENTIMENT = Path(__file__).resolve().parents[2] / "examples" / "data" / "sentiment"

# openformers module -> the reference module the original script imports from
REFERENCE_MODULES = [
    (r"openformers\.utils\.logging", "transformers.utils.logging"),
    (r"openformers\.utils\.versions", "transformers.utils.versions"),
    (r"openformers\.utils", "transformers.utils"),
    (r"openformers\.data", "datasets"),
    (r"openformers\.peft", "peft"),
    (r"openformers", "transformers"),
]
BEGIN, END = "# --- imports: the only lines that differ from the original ---", "# --- end of imports ---"


def reference_source(path: Path) -> str:
    """The script with its import block switched to the reference stack (``openformers.metrics``
    stays: evaluate loads its metrics from the hub, which these tests cannot reach)."""
    text = path.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN, 1)
    block, tail = rest.split(END, 1)
    lines = []
    for line in block.splitlines():
        if "openformers.metrics" not in line:
            for ours, theirs in REFERENCE_MODULES:
                line = re.sub(rf"\b{ours}\b", theirs, line)
        lines.append(line)
    return head + BEGIN + "\n".join(lines) + END + tail


def _tokenizer_files(name: str, target: Path) -> None:
    import openformers

    openformers.AutoTokenizer.from_pretrained(name).save_pretrained(target)


@pytest.fixture(scope="session")
def compat_workspace(tmp_path_factory):
    """A folder with ./tiny-bert-cls, ./tiny-bert-mlm, ./tiny-bert-ner, ./tiny-llama and data/."""
    from transformers import (BertConfig, BertForMaskedLM, BertForSequenceClassification, BertForTokenClassification,
                              LlamaConfig, LlamaForCausalLM)

    root = tmp_path_factory.mktemp("compat")
    bert = dict(vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                max_position_embeddings=128)
    ner_labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    builds = {
        "tiny-bert-cls": lambda: BertForSequenceClassification(BertConfig(**bert, num_labels=2)),
        "tiny-bert-mlm": lambda: BertForMaskedLM(BertConfig(**bert)),
        "tiny-bert-ner": lambda: BertForTokenClassification(BertConfig(
            **bert, id2label=dict(enumerate(ner_labels)), label2id={l: i for i, l in enumerate(ner_labels)})),
    }
    for name, build in builds.items():
        torch.manual_seed(0)
        build().save_pretrained(root / name)
        _tokenizer_files("minilm", root / name)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=49152, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                                 bos_token_id=1, eos_token_id=2, tie_word_embeddings=True)).save_pretrained(root / "tiny-llama")
    _tokenizer_files("smollm2", root / "tiny-llama")
    data = root / "data"
    data.mkdir()
    train = [json.loads(l) for l in (SENTIMENT / "train.jsonl").read_text().splitlines()[:48]]
    test = [json.loads(l) for l in (SENTIMENT / "test.jsonl").read_text().splitlines()[:16]]
    for split, rows in (("train", train), ("test", test)):
        (data / f"sentiment_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (data / f"sentiment_{split}.csv").write_text(
            "text,label\n" + "".join(f"\"{r['text']}\",{r['label']}\n" for r in rows))
        # sentence pairs in MRPC's columns: label 1 when both sentences share a sentiment
        pairs = [{"sentence1": a["text"], "sentence2": b["text"], "label": int(a["label"] == b["label"]), "idx": i}
                 for i, (a, b) in enumerate(zip(rows, rows[1:] + rows[:1]))]
        (data / f"pairs_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    people, places = ["Sarah", "Omar", "Wolfgang", "Mei"], ["London", "Berlin", "Paris", "New York"]
    ner = []
    for i in range(24):
        p, q = people[i % 4], places[(i * 3) % 4]
        tokens = ["My", "name", "is", *p.split(), "and", "I", "live", "in", *q.split(), "."]
        tags = [0, 0, 0] + [1] + [2] * (len(p.split()) - 1) + [0, 0, 0, 0] + [3] + [4] * (len(q.split()) - 1) + [0]
        ner.append({"id": str(i), "tokens": tokens, "ner_tags": tags})
    (data / "ner_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ner[:16]))
    (data / "ner_validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ner[16:]))
    (data / "ner_labels.json").write_text(json.dumps(ner_labels))
    (data / "drugs.tsv").write_text("\t".join(["", "drugName", "condition", "review", "rating", "date", "usefulCount"]) + "\n" + "".join(
        "\t".join([str(i), f"Drug{i % 5}", ["Depression", "ADHD", None, "Acne", "Pain"][i % 5] or "",
                   f"\"Review {i}: it {'helped' if i % 3 else 'did not help'} me &#039;a lot&#039;.\"", str(i % 10 + 1),
                   "May 20, 2012", str(i * 7 % 30)]) + "\n" for i in range(40)))
    return root


@pytest.fixture()
def run_script(compat_workspace, monkeypatch, tmp_path):
    """run_script(name, *argv, reference=False) -> the script's RESULT dict.

    Scripts set up logging (levels, handlers, propagation of the library loggers, progress bars);
    what they change is put back afterwards so later tests see the process as it was."""
    import logging

    from openformers.utils import progress

    saved = {name: (lg.level, list(lg.handlers), lg.propagate) for name in ("", "openformers", "transformers")
             for lg in [logging.getLogger(name or None)]}
    bars_disabled = progress.are_progress_bars_disabled()
    yield _runner(compat_workspace, monkeypatch, tmp_path)
    for name, (level, handlers, propagate) in saved.items():
        lg = logging.getLogger(name or None)
        lg.setLevel(level)
        lg.handlers[:] = handlers
        lg.propagate = propagate
    (progress.disable_progress_bars if bars_disabled else progress.enable_progress_bars)()


def _runner(compat_workspace, monkeypatch, tmp_path):

    def run(name: str, *argv: str, reference: bool = False) -> dict:
        path = SCRIPTS / name
        if reference:
            path = tmp_path / f"reference_{name}"
            path.write_text(reference_source(SCRIPTS / name), encoding="utf-8")
        workdir = tmp_path / ("reference" if reference else "openformers")
        shutil.copytree(compat_workspace, workdir, dirs_exist_ok=True)
        monkeypatch.chdir(workdir)
        monkeypatch.setattr(sys, "argv", [str(path), *argv])
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
        monkeypatch.setenv("OPENFORMERS_DATA_CACHE", str(tmp_path / "of-datasets"))
        namespace = runpy.run_path(str(path), run_name="__main__")
        return namespace["RESULT"]

    return run
