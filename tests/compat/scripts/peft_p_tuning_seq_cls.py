"""peft's P-tuning notebook for sequence classification: a PromptEncoderConfig adapter on a
classifier, trained with a plain PyTorch loop and get_linear_schedule_with_warmup.

Follows: huggingface/peft, examples/sequence_classification/P_Tuning.ipynb (Apache-2.0), its
calls and settings in order; written here, not copied. Changed: "roberta-large" ->
"./tiny-bert-cls"; load_dataset("glue", "mrpc") -> local JSON files with MRPC's columns;
evaluate.load("glue", "mrpc") -> openformers.metrics (evaluate fetches metrics from the hub); one
epoch, a smaller encoder; the tqdm bars left out; torch.manual_seed added before shuffling.
"""
# --- imports: the only lines that differ from the original ---
import torch
from torch.optim import AdamW
from torch.utils.data import DataLoader
import openformers.metrics as evaluate
from openformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup, set_seed
from openformers.data import load_dataset
from openformers.peft import PeftType, PromptEncoderConfig, get_peft_model
# --- end of imports ---

batch_size = 8
model_name_or_path = "./tiny-bert-cls"
task = "mrpc"
peft_type = PeftType.P_TUNING
device = "cpu"
num_epochs = 1
peft_config = PromptEncoderConfig(task_type="SEQ_CLS", num_virtual_tokens=4, encoder_hidden_size=32)
lr = 1e-3

padding_side = "left" if any(k in model_name_or_path for k in ("gpt", "opt", "bloom")) else "right"
tokenizer = AutoTokenizer.from_pretrained(model_name_or_path, padding_side=padding_side)
if getattr(tokenizer, "pad_token_id") is None:
    tokenizer.pad_token_id = tokenizer.eos_token_id
datasets = load_dataset("json", data_files={"train": "data/pairs_train.jsonl", "validation": "data/pairs_test.jsonl"})
metric = evaluate.load("glue", task)


def tokenize_function(examples):
    return tokenizer(examples["sentence1"], examples["sentence2"], truncation=True, max_length=None)


tokenized_datasets = datasets.map(tokenize_function, batched=True, remove_columns=["idx", "sentence1", "sentence2"])
tokenized_datasets = tokenized_datasets.rename_column("label", "labels")


def collate_fn(examples):
    return tokenizer.pad(examples, padding="longest", return_tensors="pt")


set_seed(0)
torch.manual_seed(0)
train_dataloader = DataLoader(tokenized_datasets["train"], shuffle=True, collate_fn=collate_fn, batch_size=batch_size)
eval_dataloader = DataLoader(tokenized_datasets["validation"], shuffle=False, collate_fn=collate_fn, batch_size=batch_size)

model = AutoModelForSequenceClassification.from_pretrained(model_name_or_path, return_dict=True)
torch.manual_seed(0)
model = get_peft_model(model, peft_config)
model.print_trainable_parameters()
trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
optimizer = AdamW(params=model.parameters(), lr=lr)
lr_scheduler = get_linear_schedule_with_warmup(optimizer=optimizer, num_warmup_steps=0,
                                               num_training_steps=(len(train_dataloader) * num_epochs))
model.to(device)
losses = []
for epoch in range(num_epochs):
    model.train()
    for step, batch in enumerate(train_dataloader):
        batch.to(device)
        outputs = model(**batch)
        loss = outputs.loss
        loss.backward()
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.eval()
    for step, batch in enumerate(eval_dataloader):
        batch.to(device)
        with torch.no_grad():
            outputs = model(**batch)
        predictions = outputs.logits.argmax(dim=-1)
        metric.add_batch(predictions=predictions, references=batch["labels"])
    eval_metric = metric.compute()

RESULT = {"trainable": trainable, "losses": losses, "eval": eval_metric}
