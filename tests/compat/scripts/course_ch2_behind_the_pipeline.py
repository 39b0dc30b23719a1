"""Course chapter 2, "Behind the pipeline": tokenizer -> model -> softmax, by hand.

Follows: huggingface/course, chapters/en/chapter2/2.mdx (Apache-2.0), its calls and arguments in
order; written here, not copied. Changed: the hub checkpoint
"distilbert-base-uncased-finetuned-sst-2-english" -> "./tiny-bert-cls" (a local tiny model).
"""
# --- imports: the only lines that differ from the original ---
import torch
from openformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer, pipeline
# --- end of imports ---

checkpoint = "./tiny-bert-cls"
raw_inputs = [
    "I've been waiting for a HuggingFace course my whole life.",
    "I hate this so much!",
]
classifier = pipeline("sentiment-analysis", model=checkpoint)
by_pipeline = classifier(raw_inputs)

tokenizer = AutoTokenizer.from_pretrained(checkpoint)
inputs = tokenizer(raw_inputs, padding=True, truncation=True, return_tensors="pt")

model = AutoModel.from_pretrained(checkpoint)
outputs = model(**inputs)
hidden_shape = list(outputs.last_hidden_state.shape)

model = AutoModelForSequenceClassification.from_pretrained(checkpoint)
outputs = model(**inputs)
predictions = torch.nn.functional.softmax(outputs.logits, dim=-1)

RESULT = {
    "input_ids": inputs["input_ids"].tolist(),
    "hidden_shape": hidden_shape,
    "logits_shape": list(outputs.logits.shape),
    "predictions": predictions.tolist(),
    "id2label": {str(k): v for k, v in model.config.id2label.items()},
    "pipeline": by_pipeline,
}
