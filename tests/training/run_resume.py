"""Subprocess driver for resume tests: python run_resume.py OUT MODE [KILL_STEP]

MODE: full (train to the end), crash (SIGKILL right after checkpoint KILL_STEP is saved),
crash_mid_save (SIGKILL while checkpoint KILL_STEP is being written), resume.
The final weights go to OUT/final.safetensors and the log history to OUT/history.json.
"""
import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from safetensors.torch import save_file  # noqa: E402

from openformers import Trainer, TrainerCallback, TrainingArguments  # noqa: E402
from tests.training.helpers import pad_collator, ragged_lm_data, tiny_gpt2  # noqa: E402

out, mode = sys.argv[1], sys.argv[2]
kill_step = int(sys.argv[3]) if len(sys.argv) > 3 else -1


class Killer(TrainerCallback):
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
trainer.train(resume_from_checkpoint=True if mode == "resume" else None)
save_file({k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}, os.path.join(out, "final.safetensors"))
history = [{k: v for k, v in h.items() if "runtime" not in k and "per_second" not in k} for h in trainer.state.log_history]
Path(out, "history.json").write_text(json.dumps(history))
