"""Driver for the FSDP tests: python run_fsdp.py OUT MODE PER_DEVICE_BATCH (under torchrun for sharding).

MODE parity (or both): 3 SGD steps (fp32), checkpoint at step 2, final model saved with save_model.
MODE resume: 4 AdamW steps in bf16 with checkpoints at 2 and 4 (hybrid_shard_zero2: a 1 x 2 device mesh), then a second run (from other
initial weights) resumes from checkpoint-2 and trains to step 4.
Each run writes OUT/<run>/losses.json; processes train sharded when launched by torchrun.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from openformers import Trainer, TrainingArguments  # noqa: E402
from tests.training.helpers import pad_collator, ragged_lm_data, tiny_gpt2  # noqa: E402


def run(out: str, batch: int, *, fsdp: str, resume: bool = False, seed: int = 0, sharded_checkpoint: bool = False,
        **kw) -> Trainer:
    config = {"transformer_layer_cls_to_wrap": ["GPT2Block"]}
    if sharded_checkpoint:
        config["state_dict_type"] = "SHARDED_STATE_DICT"
    args = TrainingArguments(out, per_device_train_batch_size=batch, gradient_accumulation_steps=2, logging_steps=1,
                             save_steps=2, report_to="none", disable_tqdm=True, seed=3, fsdp=fsdp,
                             fsdp_config=config if fsdp else None, **kw)
    trainer = Trainer(model=tiny_gpt2(seed=seed), args=args, train_dataset=ragged_lm_data(32), data_collator=pad_collator,
                      eval_dataset=ragged_lm_data(8, seed=5))
    trainer.train(resume_from_checkpoint=True if resume else None)
    trainer.save_model(os.path.join(out, "final"))
    eval_loss = trainer.evaluate()["eval_loss"]
    if trainer.is_world_process_zero():
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        Path(out, "losses.json").write_text(json.dumps(losses))
        Path(out, "eval_loss.json").write_text(json.dumps(eval_loss))
    return trainer


def parity(out: str, batch: int, fsdp: str) -> None:
    run(os.path.join(out, "parity"), batch, fsdp=fsdp, max_steps=3, learning_rate=1e-2, optim="sgd")


def resumed_from_step_2(out: str, full: str, again: str, batch: int, fsdp: str, **kw) -> None:
    """OUT/<full> trained; then OUT/<again>, from other initial weights, resumed from its checkpoint-2."""
    full, again = os.path.join(out, full), os.path.join(out, again)
    run(full, batch, fsdp=fsdp, **kw)
    if int(os.environ.get("RANK", 0)) == 0:
        Path(again).mkdir(parents=True)
        shutil.copytree(os.path.join(full, "checkpoint-2"), os.path.join(again, "checkpoint-2"))
    if fsdp:
        import torch

        torch.distributed.barrier()
    run(again, batch, fsdp=fsdp, resume=True, seed=1, **kw)


def resume(out: str, batch: int, fsdp: str) -> None:
    resumed_from_step_2(out, "full", "resumed", batch, fsdp, max_steps=4, learning_rate=3e-3, bf16=True,
                        optim="adamw_torch", weight_decay=0.01)


def sharded(out: str, batch: int, fsdp: str) -> None:
    """SHARDED_STATE_DICT checkpoints (torch.distributed.checkpoint): 4 AdamW steps saving every 2, then a run
    from other weights resumed from checkpoint-2 (the test resumes it on one process too)."""
    resumed_from_step_2(out, "dcp_full", "dcp_resumed", batch, fsdp, max_steps=4, learning_rate=1e-3,
                        optim="adamw_torch", sharded_checkpoint=bool(fsdp))


if __name__ == "__main__":
    target, mode, per_device = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for name, job in (("parity", parity), ("resume", resume), ("sharded", sharded)):
        if mode in (name, "both"):
            sharding = "hybrid_shard_zero2 auto_wrap" if name == "resume" else "full_shard auto_wrap"
            job(target, per_device, sharding if "WORLD_SIZE" in os.environ else "")
    import torch

    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
