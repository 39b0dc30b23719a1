"""python run_report.py OUT REPORT_TO: a short training run reporting to one tracker; the log
history goes to OUT/history.json. Trackers that patch imports (comet_ml) run here, not in the test process."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from openformers import Trainer, TrainingArguments  # noqa: E402
from tests.training.helpers import pad_collator, ragged_lm_data, tiny_gpt2  # noqa: E402

out, report_to = sys.argv[1], sys.argv[2]
args = TrainingArguments(out, max_steps=4, per_device_train_batch_size=4, logging_steps=1, save_strategy="no",
                         eval_strategy="steps", eval_steps=2, disable_tqdm=True, report_to=report_to, run_name="tiny-run")
data = ragged_lm_data(12)
trainer = Trainer(model=tiny_gpt2(), args=args, train_dataset=data, eval_dataset=data[:4], data_collator=pad_collator)
trainer.train()
Path(out, "history.json").write_text(json.dumps(trainer.state.log_history))
