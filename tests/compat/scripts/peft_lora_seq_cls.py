"""peft's LoRA notebook for sequence classification: LoraConfig on a classifier (the head in
modules_to_save), print_trainable_parameters, a plain training loop with warmup, then save and
reload the adapter with PeftModel / PeftConfig.

Follows: huggingface/peft, examples/sequence_classification/LoRA.ipynb (Apache-2.0), its calls and
settings in order; written here, not copied. Changed: "roberta-large" -> "./tiny-bert-cls";
load_dataset("glue", "mrpc") -> local JSON files with MRPC's columns; evaluate.load("glue",
"mrpc") -> openformers.metrics; one epoch; the tqdm bars and push_to_hub left out;
torch.manual_seed added before shuffling and before adding the adapter.
"""
# --- imports: the only lines that differ from the original ---
import torch
from torch.optim import AdamW
from torch.utils.data import DataLoader
import openformers.metrics as evaluate
from openformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup
from openformers.data import load_dataset
from openformers.peft import LoraConfig, PeftConfig, PeftModel, get_peft_model
# --- end of imports ---

batch_size = 8
model_name_or_path = "./tiny-bert-cls"
num_epochs = 1
lr = 3e-4
peft_config = LoraConfig(task_type="SEQ_CLS", inference_mode=False, r=8, lora_alpha=16, lora_dropout=0.1,
                         target_modules=["query", "value"])
tokenizer = AutoTokenizer.from_pretrained(model_name_or_path, padding_side="right")
datasets = load_dataset("json", data_files={"train": "data/pairs_train.jsonl", "validation": "data/pairs_test.jsonl"})
metric = evaluate.load("glue", "mrpc")


def tokenize_function(examples):
    return tokenizer(examples["sentence1"], examples["sentence2"], truncation=True, max_length=None)


tokenized_datasets = datasets.map(tokenize_function, batched=True, remove_columns=["idx", "sentence1", "sentence2"])
tokenized_datasets = tokenized_datasets.rename_column("label", "labels")


def collate_fn(examples):
    return tokenizer.pad(examples, padding="longest", return_tensors="pt")


torch.manual_seed(0)
train_dataloader = DataLoader(tokenized_datasets["train"], shuffle=True, collate_fn=collate_fn, batch_size=batch_size)
eval_dataloader = DataLoader(tokenized_datasets["validation"], shuffle=False, collate_fn=collate_fn, batch_size=batch_size)
model = AutoModelForSequenceClassification.from_pretrained(model_name_or_path, return_dict=True)
torch.manual_seed(0)
model = get_peft_model(model, peft_config)
model.print_trainable_parameters()
trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
optimizer = AdamW(params=model.parameters(), lr=lr)
lr_scheduler = get_linear_schedule_with_warmup(optimizer=optimizer, num_warmup_steps=0.06 * (len(train_dataloader) * num_epochs),
                                               num_training_steps=(len(train_dataloader) * num_epochs))
losses = []
for epoch in range(num_epochs):
    model.train()
    for step, batch in enumerate(train_dataloader):
        outputs = model(**batch)
        loss = outputs.loss
        loss.backward()
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.eval()
    for step, batch in enumerate(eval_dataloader):
        with torch.no_grad():
            outputs = model(**batch)
        predictions = outputs.logits.argmax(dim=-1)
        metric.add_batch(predictions=predictions, references=batch["labels"])
    eval_metric = metric.compute()

model.save_pretrained("lora-adapter")
config = PeftConfig.from_pretrained("lora-adapter")
inference_model = AutoModelForSequenceClassification.from_pretrained(config.base_model_name_or_path)
inference_model = PeftModel.from_pretrained(inference_model, "lora-adapter").eval()
batch = collate_fn([tokenized_datasets["validation"][i] for i in range(4)])
with torch.no_grad():
    reloaded = inference_model(**batch).logits
    trained = model(**batch).logits

RESULT = {"trainable": trainable, "losses": losses, "eval": eval_metric, "reloaded": reloaded.tolist(),
          "reload_matches": bool(torch.allclose(reloaded, trained, atol=1e-6))}
assert RESULT["reload_matches"]
