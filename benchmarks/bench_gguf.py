"""Loading the embedded SmolLM2 GGUF (Q4_1): openformers next to transformers, and decode speed.

Each measurement runs in its own subprocess so import time and peak RSS are per case:

- ``load``: wall time from a fresh interpreter (imports included) to a model ready for forward,
  peak RSS, and the bytes of parameters and buffers. Cases: openformers dequantized (float32),
  openformers keep-quantized (``GGUFQuantizationConfig``), transformers (``AutoConfig`` with
  ``gguf_file=`` and its GGUF tensor conversion into ``LlamaForCausalLM``: the work its
  ``from_pretrained(gguf_file=...)`` does, which also wants ``accelerate`` installed).
- ``decode``: greedy decoding, batch 1, ``--new-tokens`` tokens after a short prompt, with the
  KV cache: openformers float32, bfloat16, keep-quantized (bf16 compute), keep-quantized with a
  4-bit LM head.

    python benchmarks/bench_gguf.py                 # everything
    python benchmarks/bench_gguf.py --only load     # or decode
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

LOAD_OURS = r"""
import time, json, resource, sys
t0 = time.perf_counter()
import torch
torch.set_num_threads({threads})
from openformers.models.auto import AutoModelForCausalLM
from openformers.quantization.gguf_linear import weight_bytes, GGUFQuantizationConfig
qc = GGUFQuantizationConfig() if {quant} else None
model = AutoModelForCausalLM.from_pretrained("smollm2", quantization_config=qc)
with torch.no_grad():
    model(torch.tensor([[1, 2, 3]]))
print(json.dumps({{"seconds": time.perf_counter() - t0, "weights_mb": weight_bytes(model) / 1e6,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""

LOAD_HF = r"""
import time, json, resource
t0 = time.perf_counter()
import torch
torch.set_num_threads({threads})
import transformers
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
from openformers.core.hub import embedded_model_path
path = embedded_model_path("smollm2")
config = transformers.AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
model = transformers.LlamaForCausalLM(config)
state = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)["tensors"]
model.load_state_dict(state, strict=False)
model.tie_weights()
model.eval()
with torch.no_grad():
    model(torch.tensor([[1, 2, 3]]))
nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
print(json.dumps({{"seconds": time.perf_counter() - t0, "weights_mb": nbytes / 1e6,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""

DECODE = r"""
import time, json
import torch
torch.set_num_threads({threads})
from openformers.models.auto import AutoModelForCausalLM
from openformers.quantization import GGUFQuantizationConfig
from openformers.quantization.gguf_linear import weight_bytes
case = "{case}"
kw = {{}}
if case == "bf16":
    kw["dtype"] = torch.bfloat16
elif case.startswith("int4"):
    kw["quantization_config"] = GGUFQuantizationConfig(quantize_lm_head=case == "int4+head")
model = AutoModelForCausalLM.from_pretrained("smollm2", **kw)
prompt = torch.tensor([[1, 9690, 198, 504, 3458, 282, 4649, 314, 253, 1345, 30, 2]])
past_len = prompt.shape[1]

def decode(n):
    with torch.inference_mode():
        out = model(prompt, use_cache=True)
        cache, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
        toks = [tok]
        for _ in range(n - 1):
            out = model(tok, past_key_values=cache, use_cache=True)
            cache, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
            toks.append(tok)
    return torch.cat(toks, 1)

decode(4)
t = time.perf_counter()
ids = decode({new_tokens})
dt = time.perf_counter() - t
print(json.dumps({{"tok_per_s": {new_tokens} / dt, "weights_mb": weight_bytes(model) / 1e6, "ids": ids[0, :16].tolist()}}))
"""


def run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["load", "decode"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=1, help="runs per case; the best is reported")
    args = ap.parse_args()
    if args.only in (None, "load"):
        cases = [("openformers float32", LOAD_OURS.format(threads=args.threads, quant=False)),
                 ("openformers keep-quantized", LOAD_OURS.format(threads=args.threads, quant=True)),
                 ("transformers", LOAD_HF.format(threads=args.threads))]
        for name, code in cases:
            best = min((run(code) for _ in range(args.repeat)), key=lambda r: r["seconds"])
            print(f"load  {name:28s} {best['seconds']:6.2f} s  weights {best['weights_mb']:7.1f} MB  "
                  f"peak RSS {best['peak_rss_mb']:7.1f} MB", flush=True)
    if args.only in (None, "decode"):
        ref = None
        for case in ("fp32", "bf16", "int4", "int4+head"):
            best = max((run(DECODE.format(threads=args.threads, case=case, new_tokens=args.new_tokens))
                        for _ in range(args.repeat)), key=lambda r: r["tok_per_s"])
            ref = ref or best["ids"]
            same = sum(a == b for a, b in zip(best["ids"], ref))
            print(f"decode {case:10s} {best['tok_per_s']:7.1f} tok/s  weights {best['weights_mb']:7.1f} MB  "
                  f"first 16 tokens equal to fp32: {same}/16", flush=True)


if __name__ == "__main__":
    main()
