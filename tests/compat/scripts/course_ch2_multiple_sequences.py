"""Course chapter 2, "Handling multiple sequences" and "Putting it all together": padding,
attention masks, truncation, tokenize/convert_tokens_to_ids/decode, and the all-in-one call.

Follows: huggingface/course, chapters/en/chapter2/5.mdx and 6.mdx (Apache-2.0), their calls in
order; written here, not copied. Changed: "distilbert-base-uncased-finetuned-sst-2-english" ->
"./tiny-bert-cls".
"""
# --- imports: the only lines that differ from the original ---
import torch
from openformers import AutoModelForSequenceClassification, AutoTokenizer
# --- end of imports ---

checkpoint = "./tiny-bert-cls"
tokenizer = AutoTokenizer.from_pretrained(checkpoint)
model = AutoModelForSequenceClassification.from_pretrained(checkpoint)

sequence = "I've been waiting for a HuggingFace course my whole life."
tokens = tokenizer.tokenize(sequence)
ids = tokenizer.convert_tokens_to_ids(tokens)
input_ids = torch.tensor([ids])
single = model(input_ids).logits

batched_ids = [[200, 200, 200], [200, 200, tokenizer.pad_token_id]]
attention_mask = [[1, 1, 1], [1, 1, 0]]
masked = model(torch.tensor(batched_ids), attention_mask=torch.tensor(attention_mask)).logits
alone = model(torch.tensor([[200, 200]])).logits

sequences = ["I've been waiting for a HuggingFace course my whole life.", "So have I!"]
longest = tokenizer(sequences, padding="longest")
max_len = tokenizer(sequences, padding="max_length", max_length=16)
truncated = tokenizer(sequences, max_length=8, truncation=True)
tensors = tokenizer(sequences, padding=True, truncation=True, return_tensors="pt")
output = model(**tensors)

RESULT = {
    "tokens": tokens,
    "ids": ids,
    "decoded": tokenizer.decode(tokenizer(sequence)["input_ids"]),
    "single": single.tolist(),
    "masked_second_row": masked[1].tolist(),
    "alone": alone[0].tolist(),
    "longest": longest["input_ids"],
    "max_length": max_len["input_ids"],
    "truncated": truncated["input_ids"],
    "logits": output.logits.tolist(),
}
