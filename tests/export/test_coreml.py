"""CoreML export of encoders: conversion runs on Linux; running the program needs macOS, so this
checks the converted program's inputs, outputs, flexible shapes and metadata."""
from __future__ import annotations

import pytest
import torch

ct = pytest.importorskip("coremltools")

from openformers.cli.main import main as cli_main  # noqa: E402
from openformers.export import to_coreml  # noqa: E402
from openformers.models.auto import AutoConfig, AutoModel, AutoModelForTokenClassification  # noqa: E402


def _ranges(feature) -> list[tuple[int, int]]:
    return [(r.lowerBound, r.upperBound) for r in feature.type.multiArrayType.shapeRange.sizeRanges]


def test_cli_converts_an_encoder(tmp_path):
    torch.manual_seed(0)
    cfg = AutoConfig.for_model("bert", vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=37, max_position_embeddings=64)
    AutoModel.from_config(cfg).save_pretrained(tmp_path / "src")
    assert cli_main(["export", "coreml", "--model", str(tmp_path / "src"), str(tmp_path / "out")]) == 0
    spec = ct.utils.load_spec(str(tmp_path / "out" / "model.mlpackage"))
    inputs = {f.name: f for f in spec.description.input}
    assert list(inputs) == ["input_ids", "attention_mask", "token_type_ids"]
    for feature in inputs.values():
        assert _ranges(feature) == [(1, 1024), (1, 64)]  # flexible batch and sequence
    assert [o.name for o in spec.description.output] == ["last_hidden_state"]
    assert spec.description.metadata.userDefined["task"] == "feature-extraction"
    assert (tmp_path / "out" / "config.json").is_file()
    ops = {op.type for f in spec.mlProgram.functions.values() for b in f.block_specializations.values()
           for op in b.operations}
    assert {"matmul", "softmax", "layer_norm", "gather"} <= ops, ops


def test_heads_and_errors(tmp_path):
    torch.manual_seed(0)
    cfg = AutoConfig.for_model("distilbert", vocab_size=99, dim=32, n_layers=1, n_heads=4, hidden_dim=37,
                               max_position_embeddings=64, num_labels=5)
    model = AutoModelForTokenClassification.from_config(cfg).eval()
    path = to_coreml(model, tmp_path / "tok.mlpackage", precision="float16")
    spec = ct.utils.load_spec(str(path))
    assert [f.name for f in spec.description.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in spec.description.output] == ["logits"]
    with pytest.raises(ValueError, match="encoder tasks"):
        to_coreml(model, tmp_path / "x", task="text-generation-with-past")
