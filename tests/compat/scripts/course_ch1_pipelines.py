"""Course chapter 1, "Transformers, what can they do?": the pipeline() tour.

Follows: huggingface/course, chapters/en/chapter1/3.mdx (Apache-2.0), its calls and arguments in
order; written here, not copied. Changed: the default and hub models -> local tiny ones
("distilgpt2" -> "./tiny-llama", the fill-mask, NER and QA defaults -> "./tiny-bert-mlm",
"./tiny-bert-ner", "./tiny-bert-cls"; fill-mask's "<mask>" is BERT's "[MASK]" for that model);
torch.manual_seed added before sampling so both runs draw the same numbers;
grouped_entities=True -> aggregation_strategy="simple" (transformers 5 removed the old spelling;
openformers accepts both); the question-answering step is left out: transformers 5 removed that
task (openformers keeps it).
"""
# --- imports: the only lines that differ from the original ---
import torch
from openformers import pipeline
# --- end of imports ---

classifier = pipeline("sentiment-analysis", model="./tiny-bert-cls")
sentiment = classifier(["I've been waiting for a HuggingFace course my whole life.", "I hate this so much!"])

generator = pipeline("text-generation", model="./tiny-llama")
torch.manual_seed(0)
generated = generator("In this course, we will teach you how to", max_length=30, num_return_sequences=2)
assert len(generated) == 2

unmasker = pipeline("fill-mask", model="./tiny-bert-mlm")
filled = unmasker("This course will teach you all about [MASK] models.", top_k=2)

ner = pipeline("ner", model="./tiny-bert-ner", aggregation_strategy="simple")
entities = ner("My name is Sylvain and I work at Hugging Face in Brooklyn.")

# an entity's "word" is cut from the text here (case and accents kept) where the reference joins
# the tokens back (lower case with an uncased tokenizer): compared without it
RESULT = {"sentiment": sentiment, "generated": generated, "filled": filled,
          "entities": [{k: v for k, v in e.items() if k != "word"} for e in entities]}
