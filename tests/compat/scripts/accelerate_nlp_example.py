"""Accelerate's "simple example": fine-tune a BERT model on GLUE MRPC with an Accelerator, in one
process or several under a launcher.

Follows: huggingface/accelerate, examples/nlp_example.py (Apache-2.0), its calls and arguments in
order; written here, not copied. Changed: "bert-base-cased" -> the embedded MiniLM
(openformers.embedded_model_path("minilm")); the hub dataset "nyu-mll/glue" "mrpc" -> the small
CSV files in tests/distributed/data/ (same columns); evaluate.load("glue", "mrpc") ->
openformers.metrics.load. Run by tests/distributed/test_nlp_example.py (1 process and
`openformers launch --num_processes 2`), not by test_scripts.py: it needs a launcher and the
reference stack's accelerate.
"""
# --- imports: the only lines that differ from the original ---
import argparse
from pathlib import Path

import torch
from torch.optim import AdamW
from torch.utils.data import DataLoader

import openformers
import openformers.metrics as evaluate
from openformers import AutoModelForSequenceClassification, AutoTokenizer, load_dataset, set_seed
from openformers.distributed import Accelerator, DistributedType
from openformers.training.schedulers import get_linear_schedule_with_warmup

MODEL = openformers.embedded_model_path("minilm")
DATA = Path(__file__).resolve().parents[2] / "distributed" / "data"
# --- end of imports ---

MAX_GPU_BATCH_SIZE = 16
EVAL_BATCH_SIZE = 32


def get_dataloaders(accelerator: Accelerator, batch_size: int = 16):
    """Train and validation DataLoaders over MRPC, tokenized for the model."""
    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    datasets = load_dataset("csv", data_files={"train": str(DATA / "mrpc_train.csv"),
                                               "validation": str(DATA / "mrpc_validation.csv")})

    def tokenize_function(examples):
        return tokenizer(examples["sentence1"], examples["sentence2"], truncation=True, max_length=None)

    # the main process maps (and caches) first, the others reuse its result
    with accelerator.main_process_first():
        tokenized_datasets = datasets.map(tokenize_function, batched=True,
                                          remove_columns=["idx", "sentence1", "sentence2"])
    tokenized_datasets = tokenized_datasets.rename_column("label", "labels")

    def collate_fn(examples):
        max_length = 128 if accelerator.distributed_type == DistributedType.XLA else None
        if accelerator.mixed_precision == "fp8":
            pad_to_multiple_of = 16
        elif accelerator.mixed_precision != "no":
            pad_to_multiple_of = 8
        else:
            pad_to_multiple_of = None
        return tokenizer.pad(examples, padding="longest", max_length=max_length,
                             pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt")

    train_dataloader = DataLoader(tokenized_datasets["train"], shuffle=True, collate_fn=collate_fn,
                                  batch_size=batch_size, drop_last=True)
    eval_dataloader = DataLoader(tokenized_datasets["validation"], shuffle=False, collate_fn=collate_fn,
                                 batch_size=EVAL_BATCH_SIZE, drop_last=(accelerator.mixed_precision == "fp8"))
    return train_dataloader, eval_dataloader


def training_function(config, args):
    accelerator = Accelerator(cpu=args.cpu, mixed_precision=args.mixed_precision)
    lr = config["lr"]
    num_epochs = int(config["num_epochs"])
    seed = int(config["seed"])
    batch_size = int(config["batch_size"])

    metric = evaluate.load("glue", "mrpc")

    # batches above what one device holds are reached by accumulating gradients
    gradient_accumulation_steps = 1
    if batch_size > MAX_GPU_BATCH_SIZE and accelerator.distributed_type != DistributedType.XLA:
        gradient_accumulation_steps = batch_size // MAX_GPU_BATCH_SIZE
        batch_size = MAX_GPU_BATCH_SIZE

    set_seed(seed)
    train_dataloader, eval_dataloader = get_dataloaders(accelerator, batch_size)
    # built after set_seed so the seed also fixes the new head's weights
    model = AutoModelForSequenceClassification.from_pretrained(MODEL, return_dict=True)
    model = model.to(accelerator.device)
    optimizer = AdamW(params=model.parameters(), lr=lr)
    lr_scheduler = get_linear_schedule_with_warmup(
        optimizer=optimizer, num_warmup_steps=100,
        num_training_steps=(len(train_dataloader) * num_epochs) // gradient_accumulation_steps)

    model, optimizer, train_dataloader, eval_dataloader, lr_scheduler = accelerator.prepare(
        model, optimizer, train_dataloader, eval_dataloader, lr_scheduler)

    for epoch in range(num_epochs):
        model.train()
        for step, batch in enumerate(train_dataloader):
            batch.to(accelerator.device)
            outputs = model(**batch)
            loss = outputs.loss / gradient_accumulation_steps
            accelerator.backward(loss)
            if step % gradient_accumulation_steps == 0:
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()

        model.eval()
        for step, batch in enumerate(eval_dataloader):
            batch.to(accelerator.device)
            with torch.no_grad():
                outputs = model(**batch)
            predictions = outputs.logits.argmax(dim=-1)
            predictions, references = accelerator.gather_for_metrics((predictions, batch["labels"]))
            print(f"=====  {predictions}")
            metric.add_batch(predictions=predictions, references=references)

        eval_metric = metric.compute()
        accelerator.print(f"epoch {epoch}:", eval_metric)
    accelerator.end_training()


def main():
    parser = argparse.ArgumentParser(description="Simple example of training script.")
    parser.add_argument("--mixed_precision", type=str, default=None, choices=["no", "fp16", "bf16", "fp8"],
                        help="Whether to use mixed precision: fp16, bf16 (bfloat16) or fp8.")
    parser.add_argument("--cpu", action="store_true", help="If passed, will train on the CPU.")
    args = parser.parse_args()
    config = {"lr": 2e-5, "num_epochs": 3, "seed": 42, "batch_size": 16}
    training_function(config, args)


if __name__ == "__main__":
    main()
