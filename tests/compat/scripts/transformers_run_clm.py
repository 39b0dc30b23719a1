"""A causal-language-modelling script in the shape of transformers' run_clm.py: the model types a
head supports read from MODEL_FOR_CAUSAL_LM_MAPPING, a model built from CONFIG_MAPPING or loaded,
texts tokenized and grouped into blocks, Trainer with default_data_collator, perplexity from the
evaluation loss.

Follows: huggingface/transformers, examples/pytorch/language-modeling/run_clm.py (Apache-2.0), its
structure and the calls it makes, much shortened; written here, not copied. Changed:
"openai-community/gpt2" -> "./tiny-llama"; the wikitext dataset -> a local text file.
"""
# --- imports: the only lines that differ from the original ---
import math
from itertools import chain
from pathlib import Path
from openformers import (CONFIG_MAPPING, MODEL_FOR_CAUSAL_LM_MAPPING, AutoConfig, AutoModelForCausalLM, AutoTokenizer,
                         Trainer, TrainingArguments, default_data_collator, set_seed)
from openformers.data import load_dataset
# --- end of imports ---

MODEL_CONFIG_CLASSES = list(MODEL_FOR_CAUSAL_LM_MAPPING.keys())
MODEL_TYPES = tuple(conf.model_type for conf in MODEL_CONFIG_CLASSES)
assert "llama" in MODEL_TYPES and "gpt2" in MODEL_TYPES

lines = [l for l in Path("data/sentiment_train.csv").read_text().splitlines()[1:]]
Path("data/lm.txt").write_text("\n".join(lines) + "\n")
raw_datasets = load_dataset("text", data_files={"train": "data/lm.txt", "validation": "data/lm.txt"})
raw_datasets["validation"] = raw_datasets["validation"].select(range(16))

training_args = TrainingArguments("clm-out", max_steps=3, per_device_train_batch_size=4, per_device_eval_batch_size=4,
                                  learning_rate=1e-3, report_to="none", save_strategy="no", use_cpu=True, seed=7)
set_seed(training_args.seed)
config = AutoConfig.from_pretrained("./tiny-llama")
scratch_config = CONFIG_MAPPING["llama"](hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
tokenizer = AutoTokenizer.from_pretrained("./tiny-llama")
model = AutoModelForCausalLM.from_pretrained("./tiny-llama", config=config)
embedding_size = model.get_input_embeddings().weight.shape[0]
if len(tokenizer) > embedding_size:
    model.resize_token_embeddings(len(tokenizer))

column_names = list(raw_datasets["train"].features)
text_column_name = "text" if "text" in column_names else column_names[0]


def tokenize_function(examples):
    return tokenizer(examples[text_column_name])


with training_args.main_process_first(desc="dataset map tokenization"):
    tokenized_datasets = raw_datasets.map(tokenize_function, batched=True, remove_columns=column_names,
                                          desc="Running tokenizer on dataset")
block_size = 32


def group_texts(examples):
    concatenated_examples = {k: list(chain(*examples[k])) for k in examples.keys()}
    total_length = len(concatenated_examples[list(examples.keys())[0]])
    total_length = (total_length // block_size) * block_size
    result = {k: [t[i: i + block_size] for i in range(0, total_length, block_size)]
              for k, t in concatenated_examples.items()}
    result["labels"] = result["input_ids"].copy()
    return result


with training_args.main_process_first(desc="grouping texts together"):
    lm_datasets = tokenized_datasets.map(group_texts, batched=True, desc=f"Grouping texts in chunks of {block_size}")
trainer = Trainer(model=model, args=training_args, train_dataset=lm_datasets["train"],
                  eval_dataset=lm_datasets["validation"], processing_class=tokenizer,
                  data_collator=default_data_collator)
train_result = trainer.train()
metrics = trainer.evaluate()
metrics["perplexity"] = math.exp(metrics["eval_loss"])

RESULT = {"scratch_model_type": scratch_config.model_type, "blocks": lm_datasets.num_rows,
          "train_loss": train_result.metrics["train_loss"], "eval_loss": metrics["eval_loss"],
          "perplexity": metrics["perplexity"]}
