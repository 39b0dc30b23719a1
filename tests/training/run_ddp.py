"""python run_ddp.py OUT PER_DEVICE_BATCH: train the tiny LM; rank 0 writes the final weights."""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from openformers import Trainer, TrainingArguments  # noqa: E402
from tests.training.helpers import pad_collator, ragged_lm_data, tiny_gpt2  # noqa: E402

out, batch = sys.argv[1], int(sys.argv[2])
args = TrainingArguments(out, max_steps=3, per_device_train_batch_size=batch, gradient_accumulation_steps=2, learning_rate=1e-2, optim="sgd",
                         logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, seed=3)
model = tiny_gpt2()
trainer = Trainer(model=model, args=args, train_dataset=ragged_lm_data(32), data_collator=pad_collator)
local_flos = []  # this process's own count, to check that state.total_flos sums every process's
count_flos = trainer.floating_point_ops
trainer.floating_point_ops = lambda inputs: local_flos.append(count_flos(inputs)) or local_flos[-1]
trainer.train()
Path(out, f"flos_{os.environ.get('RANK', 0)}.txt").write_text(f"{trainer.state.total_flos!r} {sum(local_flos)!r}")
if int(os.environ.get("RANK", 0)) == 0:
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}, os.path.join(out, "final.safetensors"))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    Path(out, "losses.txt").write_text(" ".join(repr(x) for x in losses))
if torch.distributed.is_initialized():
    torch.distributed.destroy_process_group()
