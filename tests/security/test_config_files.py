"""config.json with fields of the wrong type, sign or size: an error naming the file and field,
before any model is sized from it."""
from __future__ import annotations

import json
import shutil

import pytest

from openformers.core.checkpoint import CheckpointError

from .memory import run_limited, modules_built, timed_load


def _copy(tmp_path, src, **changes):
    model = tmp_path / "model"
    shutil.copytree(src, model)
    config = json.loads((model / "config.json").read_text())
    config.update(changes)
    (model / "config.json").write_text(json.dumps(config))
    return model


def _load(path):
    from openformers.models.auto import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path))


@pytest.mark.parametrize("field, value", [
    ("n_embd", "abc"), ("n_embd", -16), ("n_head", 0), ("n_layer", -1), ("n_embd", 16.0), ("n_positions", True),
    ("vocab_size", 10**12),
])
def test_size_fields_of_the_wrong_type_or_sign(tmp_path, tiny_gpt2_dir, field, value):
    model = _copy(tmp_path, tiny_gpt2_dir, **{field: value})
    with pytest.raises(ValueError, match=rf"config\.json: config field {field} = {value!r}".replace("(", r"\(")):
        _load(model)


@pytest.mark.parametrize("changes, error, match", [
    ({"id2label": {"zero": "A", "1": "B"}}, ValueError, "config.json: config id2label keys must be integer label ids, got 'zero'"),
    ({"n_head": 3}, ValueError, "not divisible by the 3 attention heads"),
    ({"n_layer": 1000}, CheckpointError, "asks for 1000 layers but the checkpoint holds 2"),
    ({"vocab_size": 1 << 24}, CheckpointError, r"vocab_size = 16777216 but the checkpoint's embedding is \[64, 16\]"),
], ids=["non-integer-id2label-keys", "heads-that-do-not-divide", "more-layers-than-the-checkpoint-holds",
        "vocabulary-larger-than-the-embedding"])
def test_config_the_checkpoint_cannot_fill(tmp_path, tiny_gpt2_dir, changes, error, match):
    model = _copy(tmp_path, tiny_gpt2_dir, **changes)
    with pytest.raises(error, match=match):
        _load(model)


def test_absurdly_nested_json(tmp_path, tiny_gpt2_dir):
    model = _copy(tmp_path, tiny_gpt2_dir)
    (model / "config.json").write_text('{"model_type": "gpt2", "x": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(ValueError, match="config.json"):
        _load(model)


def test_huge_sizes_under_a_memory_limit(tmp_path, tiny_gpt2_dir):
    """Before the checks, ignore_mismatched_sizes=True allocated the config's embedding."""
    model = _copy(tmp_path, tiny_gpt2_dir, vocab_size=10**7, n_embd=4096, n_head=16)
    proc = run_limited(f"""
        from openformers.models.auto import AutoModelForCausalLM
        try:
            AutoModelForCausalLM.from_pretrained({str(model)!r}, ignore_mismatched_sizes=True)
            print("LOADED")
        except ValueError as exc:
            print("REFUSED", exc)
    """, limit_mb=2000, timeout=60)
    assert "REFUSED" in proc.stdout and "vocab_size = 10000000" in proc.stdout, proc.stdout + proc.stderr[-2000:]


def test_layer_count_far_beyond_the_checkpoint_fails_fast(tmp_path, tiny_gpt2_dir):
    model = _copy(tmp_path, tiny_gpt2_dir, n_layer=1024)
    proc = timed_load(model)
    assert "REFUSED" in proc.stdout, proc.stderr[-2000:]
    assert modules_built(proc) < 50, proc.stdout  # refused before the layers are built, not after


def test_weight_map_and_valid_config_still_load(tiny_gpt2_dir):
    assert _load(tiny_gpt2_dir).config.n_layer == 2
