"""A real LoRA fine-tune of SmolLM2-135M on the shipped instruction set (a few short steps)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _example():
    spec = importlib.util.spec_from_file_location("lora_smollm2", ROOT / "examples" / "lora_smollm2.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.mark.slow
def test_smollm2_lora_loss_falls_and_adapter_is_small(tmp_path):
    pytest.importorskip("gguf")
    from openformers.core.hub import embedded_model_path

    try:
        embedded_model_path("smollm2")
    except Exception as exc:  # the weights package is not installed
        pytest.skip(str(exc))
    result = _example().run(steps=6, batch_size=4, max_length=32, learning_rate=3e-3, output_dir=tmp_path,
                            n_eval=8, evaluate_generation=False)
    assert result["eval_loss_after"] < result["eval_loss_before"] - 0.3, result
    assert result["adapter_bytes"] < 5 * 2**20, result
    files = {p.name for p in Path(result["adapter_dir"]).iterdir()}
    assert files == {"adapter_config.json", "adapter_model.safetensors"}
