"""Fine-tune the embedded MiniLM encoder for sentiment, as in the seed documents' Trainer example.

    python examples/fine_tune_sentiment.py [--epochs 3] [--output-dir DIR] [--bf16]

Only the imports differ from the Hugging Face version (and the data, which ships with the
project instead of coming from a hub).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from openformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    load_dataset,
)
from openformers.metrics import load

DATA = Path(__file__).parent / "data" / "sentiment"


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--output-dir", default=None,
                        help="where checkpoints and the fine-tuned model go (default: a new temporary folder)")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--train-rows", type=int, default=None, help="use only the first N training rows")
    opts = parser.parse_args(argv)
    if opts.output_dir is None:  # never write into the repository by default
        opts.output_dir = tempfile.mkdtemp(prefix="openformers-sentiment-")

    # 1. data
    dataset = load_dataset("json", data_files={"train": str(DATA / "train.jsonl"), "test": str(DATA / "test.jsonl")})
    tokenizer = AutoTokenizer.from_pretrained(opts.model)

    def tokenize_function(examples):
        return tokenizer(examples["text"], truncation=True, max_length=128)

    tokenized_dataset = dataset.map(tokenize_function, batched=True)
    if opts.train_rows:
        tokenized_dataset["train"] = tokenized_dataset["train"].select(range(opts.train_rows))
    data_collator = DataCollatorWithPadding(tokenizer=tokenizer)

    # 2. model and training arguments
    model = AutoModelForSequenceClassification.from_pretrained(opts.model, num_labels=2, id2label={0: "negative", 1: "positive"})
    training_args = TrainingArguments(
        output_dir=opts.output_dir,
        evaluation_strategy="epoch",
        save_strategy="epoch",
        learning_rate=opts.learning_rate,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=32,
        num_train_epochs=opts.epochs,
        weight_decay=0.01,
        load_best_model_at_end=True,
        metric_for_best_model="accuracy",
        save_total_limit=1,
        logging_dir="./logs",
        logging_steps=10,
        bf16=opts.bf16,
        dataloader_pin_memory=False,
        report_to="none",
        disable_tqdm=True,
    )

    # 3. metrics
    accuracy, f1 = load("accuracy"), load("f1")

    def compute_metrics(eval_pred):
        predictions, labels = eval_pred
        predictions = np.argmax(predictions, axis=1)
        return {**accuracy.compute(predictions=predictions, references=labels),
                **f1.compute(predictions=predictions, references=labels, average="weighted")}

    # 4. train, evaluate, save
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=tokenized_dataset["train"],
        eval_dataset=tokenized_dataset["test"],
        tokenizer=tokenizer,
        data_collator=data_collator,
        compute_metrics=compute_metrics,
    )
    start = time.time()
    trainer.train()
    metrics = trainer.evaluate()
    metrics["wall_seconds"] = time.time() - start
    trainer.save_model(str(Path(opts.output_dir) / "fine-tuned-model"))
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})
    print(f"model saved to {Path(opts.output_dir) / 'fine-tuned-model'}")
    return metrics


if __name__ == "__main__":
    main()
