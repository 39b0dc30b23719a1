"""Subprocess driver for resume tests: python run_resume.py OUT MODE [KILL_STEP]

MODE: full (train to the end), crash (SIGKILL right after checkpoint KILL_STEP is saved),
crash_mid_save (SIGKILL while checkpoint KILL_STEP is being written), resume.
The final weights go to OUT/final.safetensors and the log history to OUT/history.json; OUT/steps-MODE.json
holds, per optimizer step, a digest of every parameter after it, and OUT/env-MODE.json what the process ran
with (threads, OpenMP's dynamic teams), so a mismatch can say where the runs parted.
"""
import hashlib
import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from openformers import Trainer, TrainerCallback, TrainingArguments  # noqa: E402
from openformers.core.native import cpu_vendor  # noqa: E402
from openformers.training.threads import dynamic_teams  # noqa: E402
from tests.training.helpers import pad_collator, ragged_lm_data, tiny_gpt2  # noqa: E402

out, mode = sys.argv[1], sys.argv[2]
kill_step = int(sys.argv[3]) if len(sys.argv) > 3 else -1


steps: dict[int, dict[str, str]] = {}
steps_file = Path(out, f"steps-{mode}.json")


def _digest(t) -> str:
    return hashlib.sha1(t.detach().contiguous().numpy().tobytes()).hexdigest()[:16]


class Killer(TrainerCallback):
    def on_step_end(self, args, state, control, model=None, **kw):
        steps[state.global_step] = {n: _digest(p) for n, p in model.named_parameters()}
        steps_file.write_text(json.dumps(steps))  # written every step: a killed run keeps its record

    def on_save(self, args, state, control, **kw):
        if mode == "crash" and state.global_step == kill_step:
            os.kill(os.getpid(), signal.SIGKILL)


args = TrainingArguments(out, max_steps=10, per_device_train_batch_size=4, gradient_accumulation_steps=2, learning_rate=1e-3,
                         warmup_steps=2, logging_steps=1, save_steps=2, report_to="none", disable_tqdm=True, seed=7,
                         weight_decay=0.01)
model = tiny_gpt2(dropout=0.1)  # dropout: the RNG state must be restored exactly
trainer = Trainer(model=model, args=args, train_dataset=ragged_lm_data(24), data_collator=pad_collator, callbacks=[Killer()])
if mode == "crash_mid_save":
    original = trainer._save_model_files

    def dying_save(directory):
        original(directory)
        if trainer.state.global_step == kill_step:
            os.kill(os.getpid(), signal.SIGKILL)

    trainer._save_model_files = dying_save
Path(out).mkdir(parents=True, exist_ok=True)
Path(out, f"env-{mode}.json").write_text(json.dumps({
    "threads": torch.get_num_threads(), "omp_dynamic": dynamic_teams(), "cpu": cpu_vendor(),
    **{k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_DYNAMIC", "MKL_DYNAMIC", "MKL_CBWR")}}))
trainer.train(resume_from_checkpoint=True if mode == "resume" else None)
save_file({k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}, os.path.join(out, "final.safetensors"))
history = [{k: v for k, v in h.items() if "runtime" not in k and "per_second" not in k} for h in trainer.state.log_history]
Path(out, "history.json").write_text(json.dumps(history))
