"""Course chapter 3, "Fine-tuning a model with the Trainer API": tokenize sentence pairs with
Dataset.map, pad with DataCollatorWithPadding, train and evaluate with compute_metrics.

Follows: huggingface/course, chapters/en/chapter3/2.mdx and 3.mdx (Apache-2.0), their calls in
order; written here, not copied. Changed: "bert-base-uncased" -> "./tiny-bert-cls";
load_dataset("glue", "mrpc") -> local JSON files with MRPC's columns; evaluate.load("glue",
"mrpc") -> openformers.metrics (evaluate fetches metrics from the hub); a few-step run
(max_steps) instead of three epochs.
"""
# --- imports: the only lines that differ from the original ---
import numpy as np
import openformers.metrics as evaluate
from openformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments
from openformers.data import load_dataset
# --- end of imports ---

raw_datasets = load_dataset("json", data_files={"train": "data/pairs_train.jsonl", "validation": "data/pairs_test.jsonl"})
checkpoint = "./tiny-bert-cls"
tokenizer = AutoTokenizer.from_pretrained(checkpoint)


def tokenize_function(example):
    return tokenizer(example["sentence1"], example["sentence2"], truncation=True)


tokenized_datasets = raw_datasets.map(tokenize_function, batched=True)
data_collator = DataCollatorWithPadding(tokenizer=tokenizer)
samples = tokenized_datasets["train"][:8]
samples = {k: v for k, v in samples.items() if k not in ["idx", "sentence1", "sentence2"]}
batch = data_collator(samples)  # a dict of lists, as the chapter passes it
batch_shapes = {k: list(v.shape) for k, v in batch.items()}

training_args = TrainingArguments("test-trainer", eval_strategy="epoch", max_steps=6, per_device_train_batch_size=8,
                                  report_to="none", seed=42, use_cpu=True, save_strategy="no")
model = AutoModelForSequenceClassification.from_pretrained(checkpoint, num_labels=2)


def compute_metrics(eval_preds):
    metric = evaluate.load("glue", "mrpc")
    logits, labels = eval_preds
    predictions = np.argmax(logits, axis=-1)
    return metric.compute(predictions=predictions, references=labels)


trainer = Trainer(model, training_args, train_dataset=tokenized_datasets["train"],
                  eval_dataset=tokenized_datasets["validation"], data_collator=data_collator,
                  processing_class=tokenizer, compute_metrics=compute_metrics)
trainer.train()
predictions = trainer.predict(tokenized_datasets["validation"])
preds = np.argmax(predictions.predictions, axis=-1)
metrics = trainer.evaluate()

RESULT = {"batch_shapes": batch_shapes, "predictions_shape": list(predictions.predictions.shape),
          "label_ids": predictions.label_ids.tolist(), "preds": preds.tolist(),
          "eval_loss": metrics["eval_loss"], "eval_accuracy": metrics["eval_accuracy"], "eval_f1": metrics["eval_f1"],
          "metric_keys": sorted(k for k in metrics if not k.endswith(("_runtime", "per_second")))}
