"""Course chapter 3, "A full training": the same fine-tune without the Trainer, with a DataLoader,
AdamW, get_scheduler("linear") and a metric accumulated batch by batch.

Follows: huggingface/course, chapters/en/chapter3/4.mdx (Apache-2.0), its calls in order;
written here, not copied. Changed: "bert-base-uncased" -> "./tiny-bert-cls";
load_dataset("glue", "mrpc") -> local JSON files with MRPC's columns; evaluate.load("glue",
"mrpc") -> openformers.metrics (evaluate fetches metrics from the hub); one epoch on the tiny
split; the tqdm bar left out; torch.manual_seed added before shuffling.
"""
# --- imports: the only lines that differ from the original ---
import torch
from torch.optim import AdamW
from torch.utils.data import DataLoader
import openformers.metrics as evaluate
from openformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, get_scheduler
from openformers.data import load_dataset
# --- end of imports ---

raw_datasets = load_dataset("json", data_files={"train": "data/pairs_train.jsonl", "validation": "data/pairs_test.jsonl"})
checkpoint = "./tiny-bert-cls"
tokenizer = AutoTokenizer.from_pretrained(checkpoint)


def tokenize_function(example):
    return tokenizer(example["sentence1"], example["sentence2"], truncation=True)


tokenized_datasets = raw_datasets.map(tokenize_function, batched=True)
data_collator = DataCollatorWithPadding(tokenizer=tokenizer)
tokenized_datasets = tokenized_datasets.remove_columns(["sentence1", "sentence2", "idx"])
tokenized_datasets = tokenized_datasets.rename_column("label", "labels")
tokenized_datasets.set_format("torch")
columns = tokenized_datasets["train"].column_names

torch.manual_seed(0)
train_dataloader = DataLoader(tokenized_datasets["train"], shuffle=True, batch_size=8, collate_fn=data_collator)
eval_dataloader = DataLoader(tokenized_datasets["validation"], batch_size=8, collate_fn=data_collator)
first_batch = {k: list(v.shape) for k, v in next(iter(DataLoader(tokenized_datasets["train"], batch_size=8,
                                                                  collate_fn=data_collator))).items()}

model = AutoModelForSequenceClassification.from_pretrained(checkpoint, num_labels=2)
optimizer = AdamW(model.parameters(), lr=5e-5)
num_epochs = 1
num_training_steps = num_epochs * len(train_dataloader)
lr_scheduler = get_scheduler("linear", optimizer=optimizer, num_warmup_steps=0, num_training_steps=num_training_steps)

device = torch.device("cpu")
model.to(device)
model.train()
losses = []
for epoch in range(num_epochs):
    for batch in train_dataloader:
        batch = {k: v.to(device) for k, v in batch.items()}
        outputs = model(**batch)
        loss = outputs.loss
        loss.backward()
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad()
        losses.append(loss.item())

metric = evaluate.load("glue", "mrpc")
model.eval()
for batch in eval_dataloader:
    batch = {k: v.to(device) for k, v in batch.items()}
    with torch.no_grad():
        outputs = model(**batch)
    predictions = torch.argmax(outputs.logits, dim=-1)
    metric.add_batch(predictions=predictions, references=batch["labels"])

RESULT = {"columns": columns, "first_batch": first_batch, "losses": losses, "lr": lr_scheduler.get_last_lr(),
          "metric": metric.compute()}
