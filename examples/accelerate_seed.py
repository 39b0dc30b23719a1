"""The seed document's two `accelerate` examples, on openformers.

Changes: the imports (`transformers` / `accelerate` -> `openformers` / `openformers.distributed`),
and, offline, the model name "bert-base-uncased" -> the embedded MiniLM (a BERT encoder).
Run it as it is (one process) or with `openformers launch --num_processes 2 examples/accelerate_seed.py`.
"""
import torch

import openformers
from openformers import AutoModelForSequenceClassification
from openformers.distributed import Accelerator

# Example 1: model training with accelerate
accelerator = Accelerator()
model = AutoModelForSequenceClassification.from_pretrained(openformers.embedded_model_path("minilm"), num_labels=2)

device = accelerator.device
model.to(device)

# Example 2: data parallelism on several devices
accelerator = Accelerator()
device = accelerator.device

# put the model and data on the accelerator
model = torch.nn.Linear(10, 2).to(device)
optimizer = torch.optim.Adam(model.parameters())
inputs = torch.randn(16, 10).to(device)

# data-parallel preparation
model, optimizer, inputs = accelerator.prepare(model, optimizer, inputs)
outputs = model(inputs)
print(outputs.shape)  # (16, 2)
