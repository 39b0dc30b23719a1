"""Driver for the DeepSpeed test: python run_deepspeed.py OUT (under ``openformers launch --num_processes 2``).

The same 3 AdamW steps (global batch 8) with plain DDP, ZeRO-2 and ZeRO-3 through the Accelerator;
each writes OUT/<name>.json (losses) and OUT/<name>/ (the full weights, through save_model).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from openformers.distributed import Accelerator, DeepSpeedPlugin, set_seed  # noqa: E402
from tests.distributed.run_accelerate import lm_rows  # noqa: E402
from tests.training.helpers import pad_collator, tiny_gpt2  # noqa: E402


def run(out: Path, name: str, stage: int | None) -> None:
    plugin = DeepSpeedPlugin(zero_stage=stage, gradient_clipping=1.0) if stage is not None else None
    acc = Accelerator(deepspeed_plugin=plugin)
    set_seed(0)
    model = tiny_gpt2(seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    loader = DataLoader(lm_rows(24, seed=4), batch_size=8 // acc.num_processes, collate_fn=pad_collator)
    model, optimizer, loader = acc.prepare(model, optimizer, loader)
    losses = []
    for batch in loader:
        loss = model(**batch).loss
        acc.backward(loss)
        if plugin is None:
            acc.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(acc.reduce(loss.detach(), "mean")))
    acc.save_model(model, out / name)
    if acc.is_main_process:
        (out / f"{name}.json").write_text(json.dumps(losses))


if __name__ == "__main__":
    target = Path(sys.argv[1])
    for name, stage in (("ddp", None), ("zero2", 2), ("zero3", 3)):
        run(target, name, stage)
