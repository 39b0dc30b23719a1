"""Course chapter 7, "Token classification": align word labels to sub-word tokens, pad with
DataCollatorForTokenClassification, train with the Trainer and score with seqeval.

Follows: huggingface/course, chapters/en/chapter7/2.mdx (Apache-2.0), its calls in order; written
here, not copied. Changed: "bert-base-cased" -> "./tiny-bert-ner"; load_dataset("conll2003") ->
local JSON files with its tokens/ner_tags columns and a label list beside them;
evaluate.load("seqeval") -> openformers.metrics (evaluate fetches metrics from the hub); a
few-step run (max_steps) instead of three epochs; push_to_hub left out.
"""
# --- imports: the only lines that differ from the original ---
import json
import numpy as np
import openformers.metrics as evaluate
from openformers import AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification, Trainer, TrainingArguments
from openformers.data import load_dataset
# --- end of imports ---

raw_datasets = load_dataset("json", data_files={"train": "data/ner_train.jsonl", "validation": "data/ner_validation.jsonl"})
label_names = json.load(open("data/ner_labels.json"))
model_checkpoint = "./tiny-bert-ner"
tokenizer = AutoTokenizer.from_pretrained(model_checkpoint)
inputs = tokenizer(raw_datasets["train"][0]["tokens"], is_split_into_words=True)
word_ids = inputs.word_ids()


def align_labels_with_tokens(labels, word_ids):
    new_labels = []
    current_word = None
    for word_id in word_ids:
        if word_id != current_word:
            current_word = word_id
            label = -100 if word_id is None else labels[word_id]
            new_labels.append(label)
        elif word_id is None:
            new_labels.append(-100)
        else:
            label = labels[word_id]
            if label % 2 == 1:  # B-XXX inside a word continues as I-XXX
                label += 1
            new_labels.append(label)
    return new_labels


def tokenize_and_align_labels(examples):
    tokenized_inputs = tokenizer(examples["tokens"], truncation=True, is_split_into_words=True)
    all_labels = examples["ner_tags"]
    new_labels = []
    for i, labels in enumerate(all_labels):
        new_labels.append(align_labels_with_tokens(labels, tokenized_inputs.word_ids(i)))
    tokenized_inputs["labels"] = new_labels
    return tokenized_inputs


tokenized_datasets = raw_datasets.map(tokenize_and_align_labels, batched=True,
                                      remove_columns=raw_datasets["train"].column_names)
data_collator = DataCollatorForTokenClassification(tokenizer=tokenizer)
batch = data_collator([tokenized_datasets["train"][i] for i in range(2)])
metric = evaluate.load("seqeval")


def compute_metrics(eval_preds):
    logits, labels = eval_preds
    predictions = np.argmax(logits, axis=-1)
    true_labels = [[label_names[l] for l in label if l != -100] for label in labels]
    true_predictions = [[label_names[p] for (p, l) in zip(prediction, label) if l != -100]
                        for prediction, label in zip(predictions, labels)]
    all_metrics = metric.compute(predictions=true_predictions, references=true_labels)
    return {"precision": all_metrics["overall_precision"], "recall": all_metrics["overall_recall"],
            "f1": all_metrics["overall_f1"], "accuracy": all_metrics["overall_accuracy"]}


id2label = {i: label for i, label in enumerate(label_names)}
label2id = {v: k for k, v in id2label.items()}
model = AutoModelForTokenClassification.from_pretrained(model_checkpoint, id2label=id2label, label2id=label2id)
args = TrainingArguments("bert-finetuned-ner", eval_strategy="epoch", save_strategy="no", learning_rate=2e-5,
                         max_steps=4, weight_decay=0.01, per_device_train_batch_size=8, report_to="none", use_cpu=True)
trainer = Trainer(model=model, args=args, train_dataset=tokenized_datasets["train"],
                  eval_dataset=tokenized_datasets["validation"], data_collator=data_collator,
                  compute_metrics=compute_metrics, processing_class=tokenizer)
trainer.train()
metrics = trainer.evaluate()

RESULT = {"word_ids": word_ids, "labels_0": tokenized_datasets["train"][0]["labels"],
          "batch_labels": batch["labels"].tolist(),
          "metrics": {k: v for k, v in metrics.items() if not k.endswith(("_runtime", "per_second"))}}
