"""Driver for the DeepSpeed test: python run_deepspeed.py OUT (under ``openformers launch --num_processes 2``).

The same 3 AdamW steps (global batch 8) with plain DDP, ZeRO-2 and ZeRO-3 through the Accelerator;
each writes OUT/<name>.json (losses) and OUT/<name>/ (the full weights, through save_model).
Then the Trainer: 4 steps with DDP and with ZeRO-3 (``deepspeed=`` a config of "auto" values),
checkpoints every 2 steps, and a ZeRO-3 run resumed from checkpoint-2 (OUT/trainer_<name>.json).
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


def run(out: Path, name: str, stage: int | None, resume_from: Path | None = None) -> list[float]:
    """3 steps (``save_state`` after the first); with ``resume_from``, a fresh model resumes from it."""
    plugin = DeepSpeedPlugin(zero_stage=stage, gradient_clipping=1.0) if stage is not None else None
    acc = Accelerator(deepspeed_plugin=plugin)
    set_seed(0)
    model = tiny_gpt2(seed=0 if resume_from is None else 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    loader = DataLoader(lm_rows(24, seed=4), batch_size=8 // acc.num_processes, collate_fn=pad_collator)
    model, optimizer, loader = acc.prepare(model, optimizer, loader)
    if resume_from is not None:
        acc.load_state(resume_from)
    losses = []
    for batch in loader:
        loss = model(**batch).loss
        acc.backward(loss)
        if plugin is None:
            acc.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(acc.reduce(loss.detach(), "mean")))
        if len(losses) == 1 and resume_from is None:
            acc.save_state(out / f"{name}_state")
    if resume_from is not None:
        return losses
    acc.save_model(model, out / name)
    result = {"losses": losses}
    if stage == 3:  # the engine's checkpoint (each process its partitions) resumes
        result["resumed"] = run(out, name, stage, resume_from=out / f"{name}_state")
    if acc.is_main_process:
        (out / f"{name}.json").write_text(json.dumps(result))
    return losses


ZERO3_AUTO = {"train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto", "gradient_accumulation_steps": "auto",
              "gradient_clipping": "auto", "zero_optimization": {"stage": 3, "reduce_bucket_size": "auto",
                                                                 "stage3_param_persistence_threshold": "auto"}}


def trainer_run(out: Path, name: str, deepspeed: dict | None, resume: bool = False) -> None:
    import shutil

    from openformers import Trainer, TrainingArguments

    args = TrainingArguments(str(out / f"trainer_{name}"), per_device_train_batch_size=2, gradient_accumulation_steps=2,
                             max_steps=4, save_steps=2, logging_steps=1, learning_rate=1e-3, optim="adamw_torch",
                             report_to="none", disable_tqdm=True, seed=3, deepspeed=deepspeed)
    if resume and args.process_index == 0:
        Path(args.output_dir).mkdir(parents=True)
        shutil.copytree(out / "trainer_zero3" / "checkpoint-2", Path(args.output_dir) / "checkpoint-2")
    if resume:
        torch.distributed.barrier()
    trainer = Trainer(model=tiny_gpt2(seed=1 if resume else 0), args=args, train_dataset=lm_rows(32, seed=8),
                      data_collator=pad_collator)
    trainer.train(resume_from_checkpoint=True if resume else None)
    trainer.save_model(str(out / f"trainer_{name}" / "final"))
    if trainer.is_world_process_zero():
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        (out / f"trainer_{name}.json").write_text(json.dumps(losses))


if __name__ == "__main__":
    target = Path(sys.argv[1])
    for name, stage in (("ddp", None), ("zero2", 2), ("zero3", 3)):
        run(target, name, stage)
    trainer_run(target, "ddp", None)
    trainer_run(target, "zero3", ZERO3_AUTO)
    trainer_run(target, "zero3_resumed", ZERO3_AUTO, resume=True)
