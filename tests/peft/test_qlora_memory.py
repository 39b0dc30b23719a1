"""QLoRA's memory: training a LoRA on a 4-bit base needs less memory than on the float32 base.

Each configuration runs in a fresh interpreter and reads its peak resident set from
``VmHWM`` (``ru_maxrss`` would not do: Linux carries it over ``execve``, so a child started by a
large test process would report the parent's size), covering loading plus a few training
steps, measured from the RSS after the imports. The model is small enough to train in seconds and large enough (~35 MB of float32
linear weights against ~5 MB packed) that the gap dwarfs allocator noise. Gradient
checkpointing stays off: with it, a 4-bit layer that kept its dequantized weight for the
backward pass would go unnoticed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import json, sys
mode, path = sys.argv[1], sys.argv[2]
import torch
torch.manual_seed(0)
torch.set_num_threads(1)
from openformers import AutoModelForCausalLM, BitsAndBytesConfig
from openformers.peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

def status_mb(field):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(field)) / 1024

def rss_mb():
    return status_mb("VmRSS")

start = rss_mb()
if mode == "qlora":
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True)
    model = prepare_model_for_kbit_training(AutoModelForCausalLM.from_pretrained(path, quantization_config=q),
                                            use_gradient_checkpointing=False)
else:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
loaded = rss_mb()
model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
model.train()
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
ids = torch.randint(0, 512, (2, 32), generator=torch.Generator().manual_seed(0))
losses = []
for step in range(3):
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step(); opt.zero_grad(set_to_none=True)
    losses.append(float(loss))
peak = status_mb("VmHWM")
print(json.dumps({"growth_mb": peak - start, "train_growth_mb": peak - loaded, "losses": losses}))
"""


def _run(mode: str, path: Path) -> dict:
    # large blocks straight from mmap, so the resident set follows live tensors rather than what
    # the heap kept of freed ones (that slack differs from run to run)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(path)], capture_output=True, text=True, cwd=ROOT,
                         timeout=300, check=False, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_qlora_peak_memory_below_lora(tmp_path):
    transformers = pytest.importorskip("transformers")
    from tests.models.test_gguf import write_tiny_llama

    # a Q8_0 GGUF like the embedded SmolLM2 (Q4_1): both runs load dequantized float32 weights from it
    config = transformers.LlamaConfig(vocab_size=512, hidden_size=384, intermediate_size=1536, num_hidden_layers=4,
                                      num_attention_heads=6, num_key_value_heads=3, max_position_embeddings=64,
                                      tie_word_embeddings=False)
    torch.manual_seed(0)
    path = write_tiny_llama(tmp_path / "tiny.gguf", transformers.LlamaForCausalLM(config), qtype="Q8_0")
    lora, qlora = _run("lora", path), _run("qlora", path)
    linear_mb = 4 * (2 * 384 * 384 + 2 * 384 * 192 + 3 * 384 * 1536) * 4 / 2**20  # float32 bytes of the 4-bit layers
    # both trained: the loss fell
    assert lora["losses"][-1] < lora["losses"][0] and qlora["losses"][-1] < qlora["losses"][0], (lora, qlora)
    # the packed weights save most of the float32 bytes; a float copy of each dequantized weight kept
    # for the backward pass (~0.8 of them here, the MLP) would close the gap
    assert qlora["growth_mb"] < lora["growth_mb"] - 0.5 * linear_mb, (lora, qlora, linear_mb)
