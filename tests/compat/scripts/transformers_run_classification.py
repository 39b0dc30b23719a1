"""A text-classification training script in the shape of transformers' examples
(examples/pytorch/text-classification/run_glue.py): dataclasses for model and data options read
with HfArgumentParser together with TrainingArguments, check_min_version / require_version,
logging set up from the arguments, set_seed, CSV data, Trainer with log_metrics, save_metrics and
save_state.

Follows: huggingface/transformers, examples/pytorch/text-classification/run_glue.py (Apache-2.0),
its structure and the calls it makes, much shortened; written here, not copied. Changed: model
and data paths are local (passed on the command line), evaluate.load("accuracy") ->
openformers.metrics.
"""
# --- imports: the only lines that differ from the original ---
import logging
import sys
from dataclasses import dataclass, field
from typing import Optional
import numpy as np
import openformers.metrics as evaluate
from openformers import (AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                         EvalPrediction, HfArgumentParser, Trainer, TrainingArguments, default_data_collator, set_seed)
from openformers.data import load_dataset
from openformers.utils import check_min_version
from openformers.utils.versions import require_version
import openformers.utils.logging as hf_logging
# --- end of imports ---

check_min_version("4.57.0.dev0")
require_version("datasets>=1.8.0", "To fix: pip install -r examples/pytorch/text-classification/requirements.txt")
logger = logging.getLogger(__name__)


@dataclass
class DataTrainingArguments:
    train_file: Optional[str] = field(default=None, metadata={"help": "A csv or a json file containing the training data."})
    validation_file: Optional[str] = field(default=None, metadata={"help": "A csv or a json file for validation."})
    max_seq_length: int = field(default=128, metadata={"help": "The maximum total input sequence length."})
    pad_to_max_length: bool = field(default=False, metadata={"help": "Pad all samples to max_seq_length."})
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "Truncate the training set."})


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={"help": "Path to pretrained model or model identifier."})
    config_name: Optional[str] = field(default=None, metadata={"help": "Pretrained config name or path."})
    tokenizer_name: Optional[str] = field(default=None, metadata={"help": "Pretrained tokenizer name or path."})
    use_fast_tokenizer: bool = field(default=True, metadata={"help": "Whether to use a fast tokenizer."})
    ignore_mismatched_sizes: bool = field(default=False, metadata={"help": "Re-head a model with other labels."})


parser = HfArgumentParser((ModelArguments, DataTrainingArguments, TrainingArguments))
if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
    model_args, data_args, training_args = parser.parse_json_file(json_file=sys.argv[1])
else:
    model_args, data_args, training_args = parser.parse_args_into_dataclasses()

logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%m/%d/%Y %H:%M:%S",
                    handlers=[logging.StreamHandler(sys.stdout)])
if training_args.should_log:
    hf_logging.set_verbosity_info()
log_level = training_args.get_process_log_level()
logger.setLevel(log_level)
hf_logging.set_verbosity(log_level)
hf_logging.enable_default_handler()
hf_logging.enable_explicit_format()
logger.warning(f"Process rank: {training_args.local_process_index}, device: {training_args.device}, "
               f"n_gpu: {training_args.n_gpu}, distributed training: {training_args.parallel_mode.value == 'distributed'}")
set_seed(training_args.seed)

data_files = {"train": data_args.train_file, "validation": data_args.validation_file}
extension = data_args.train_file.split(".")[-1]
raw_datasets = load_dataset(extension, data_files=data_files)
label_list = sorted(raw_datasets["train"].unique("label"))
num_labels = len(label_list)

config = AutoConfig.from_pretrained(model_args.config_name or model_args.model_name_or_path, num_labels=num_labels)
tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer_name or model_args.model_name_or_path,
                                          use_fast=model_args.use_fast_tokenizer)
model = AutoModelForSequenceClassification.from_pretrained(
    model_args.model_name_or_path, from_tf=bool(".ckpt" in model_args.model_name_or_path), config=config,
    ignore_mismatched_sizes=model_args.ignore_mismatched_sizes)
padding = "max_length" if data_args.pad_to_max_length else False
max_seq_length = min(data_args.max_seq_length, tokenizer.model_max_length)


def preprocess_function(examples):
    return tokenizer(examples["text"], padding=padding, max_length=max_seq_length, truncation=True)


with training_args.main_process_first(desc="dataset map pre-processing"):
    raw_datasets = raw_datasets.map(preprocess_function, batched=True, desc="Running tokenizer on dataset")
train_dataset = raw_datasets["train"]
if data_args.max_train_samples is not None:
    train_dataset = train_dataset.select(range(min(len(train_dataset), data_args.max_train_samples)))
eval_dataset = raw_datasets["validation"]
metric = evaluate.load("accuracy")


def compute_metrics(p: EvalPrediction):
    preds = p.predictions[0] if isinstance(p.predictions, tuple) else p.predictions
    preds = np.argmax(preds, axis=1)
    result = metric.compute(predictions=preds, references=p.label_ids)
    if len(result) > 1:
        result["combined_score"] = np.mean(list(result.values())).item()
    return result


data_collator = default_data_collator if data_args.pad_to_max_length else DataCollatorWithPadding(tokenizer)
trainer = Trainer(model=model, args=training_args, train_dataset=train_dataset if training_args.do_train else None,
                  eval_dataset=eval_dataset if training_args.do_eval else None, compute_metrics=compute_metrics,
                  processing_class=tokenizer, data_collator=data_collator)
train_result = trainer.train()
metrics = train_result.metrics
metrics["train_samples"] = len(train_dataset)
trainer.save_model()
trainer.log_metrics("train", metrics)
trainer.save_metrics("train", metrics)
trainer.save_state()
eval_metrics = trainer.evaluate(eval_dataset=eval_dataset)
eval_metrics["eval_samples"] = len(eval_dataset)
trainer.log_metrics("eval", eval_metrics)
trainer.save_metrics("eval", eval_metrics)
hf_logging.set_verbosity_warning()
hf_logging.reset_format()
hf_logging.disable_default_handler()

RESULT = {"losses": [h["loss"] for h in trainer.state.log_history if "loss" in h], "train_loss": metrics["train_loss"], "train_samples": metrics["train_samples"],
          "eval": {k: v for k, v in eval_metrics.items() if not k.endswith(("_runtime", "per_second"))},
          "label_list": label_list, "args": {"learning_rate": training_args.learning_rate, "seed": training_args.seed,
                                             "do_eval": training_args.do_eval, "max_steps": training_args.max_steps}}
