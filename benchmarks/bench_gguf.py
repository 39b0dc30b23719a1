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
- ``llamacpp``: keep-quantized openformers (bfloat16 activations, int4 projections; LM head in
  bfloat16, or ``fast_lm_head``: 4-bit scores with the top 64 rescored in bfloat16) next to
  llama.cpp (``llama-cpp-python``, the ``bench`` extra) on the same
  GGUF file, same prompt, same thread count, greedy, ``--new-tokens`` tokens; batch 1 for both and
  batch 8 for openformers (llama.cpp's Python API decodes one sequence). Cases alternate, each in
  its own subprocess, ``--repeat`` rounds; the median is reported. Per decode step: wall and CPU
  time, and the weight bytes one step reads, set against the memory read bandwidth measured in
  the same run (a large ``torch.sum``). Skipped with a message when llama.cpp is not installed.

- ``chat``: time from command start to the first reply text on stdout for
  ``echo QUESTION | openformers chat --max-new-tokens 16`` (dequantized, and ``--quantized``)
  against the same with transformers (GGUF ``from_pretrained``, chat template, ``TextStreamer``),
  a fresh interpreter each. Both streamers print a word at a time, so "first text" is the first
  word; the child's own report of its first token is printed next to it.

    python benchmarks/bench_gguf.py                 # everything
    python benchmarks/bench_gguf.py --only load     # or decode, llamacpp, chat
    python benchmarks/bench_gguf.py --only llamacpp --threads 2 --new-tokens 128 --repeat 3
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


PROMPT = [1, 9690, 198, 504, 3458, 282, 4649, 314, 253, 1345, 30, 2, 198, 1, 4093, 198, 7306, 314, 260, 3575,
          282, 4649, 47, 2, 198, 1, 520, 9531, 198]

VERSUS_OURS = r"""
import time, json
import torch
torch.set_num_threads({threads})
from openformers.models.auto import AutoModelForCausalLM
from openformers.quantization import GGUFQuantizationConfig
from openformers.quantization.gguf_linear import QuantizedLinear, step_bytes
qc = GGUFQuantizationConfig(fast_lm_head={fast})
model = AutoModelForCausalLM.from_pretrained("smollm2", dtype=torch.bfloat16, quantization_config=qc)
prompt = torch.tensor([{prompt}] * {batch})

def decode(n):
    with torch.inference_mode():
        out = model(prompt, use_cache=True)
        cache, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
        toks = [tok]
        t, c = time.perf_counter(), time.process_time()
        for _ in range(n - 1):
            out = model(tok, past_key_values=cache, use_cache=True)
            cache, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
            toks.append(tok)
        return torch.cat(toks, 1), time.perf_counter() - t, time.process_time() - c

decode(4)
ids, wall, cpu = decode({new_tokens})
steps = {new_tokens} - 1
print(json.dumps({{"tok_per_s": steps * {batch} / wall, "ms_per_step": wall / steps * 1e3,
                  "cpu_ms_per_step": cpu / steps * 1e3, "step_mb": step_bytes(model) / 1e6,
                  "ids": ids[0, :16].tolist()}}))
"""

VERSUS_LLAMACPP = r"""
import time, json
import numpy as np
import llama_cpp.llama_cpp as lc
from llama_cpp import Llama
from openformers.core.hub import embedded_model_path
from openformers.core.gguf import GGUFFile
# no extra buffer types: a machine that lists AMX without granting it dies in ggml's AMX repacking (SIGILL)
default_params = lc.llama_model_default_params
def model_params():
    params = default_params()
    params.use_extra_bufts = False
    return params
lc.llama_model_default_params = model_params
path = embedded_model_path("smollm2")
llm = Llama(model_path=str(path), n_threads={threads}, n_threads_batch={threads}, n_ctx=512, n_batch=64,
            verbose=False)
prompt = {prompt}
n_vocab = llm.n_vocab()

def last_logits():
    return np.ctypeslib.as_array(lc.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(n_vocab,))

def decode(n):
    llm.reset()
    llm.eval(prompt)
    tok = int(np.argmax(last_logits()))
    toks = [tok]
    t, c = time.perf_counter(), time.process_time()
    for _ in range(n - 1):
        llm.eval([tok])
        tok = int(np.argmax(last_logits()))
        toks.append(tok)
    return toks, time.perf_counter() - t, time.process_time() - c

decode(4)
ids, wall, cpu = decode({new_tokens})
steps = {new_tokens} - 1
# every tensor of the blocks, and the token embedding, which the tied output layer reads whole
gf = GGUFFile(path)
nbytes = sum(info.nbytes for name, info in gf.tensors.items() if name.startswith(("blk.", "output", "token_embd")))
print(json.dumps({{"tok_per_s": steps / wall, "ms_per_step": wall / steps * 1e3, "cpu_ms_per_step": cpu / steps * 1e3,
                  "step_mb": nbytes / 1e6, "ids": ids[:16]}}))
"""

BANDWIDTH = r"""
import time, json, statistics
import torch
torch.set_num_threads({threads})
x = torch.ones(256 * 2**20)  # 1 GiB of float32, far larger than the caches
x.sum()
times = []
for _ in range(7):
    t = time.perf_counter()
    x.sum()
    times.append(time.perf_counter() - t)
print(json.dumps({{"gb_per_s": x.numel() * 4 / statistics.median(times) / 1e9}}))
"""


def versus(args: argparse.Namespace) -> None:
    """Keep-quantized openformers against llama.cpp, cases alternating over ``--repeat`` rounds."""
    import importlib.util
    import statistics

    have_llamacpp = importlib.util.find_spec("llama_cpp") is not None
    if not have_llamacpp:
        print("llama.cpp: not installed, skipped (pip install llama-cpp-python, or the 'bench' extra)", flush=True)
    fmt = dict(threads=args.threads, new_tokens=args.new_tokens, prompt=PROMPT)
    cases = {}
    if have_llamacpp:
        cases["llama.cpp Q4_1, batch 1"] = VERSUS_LLAMACPP.format(**fmt)
    cases["openformers int4, fast head, batch 1"] = VERSUS_OURS.format(fast=True, batch=1, **fmt)
    cases["openformers int4, bf16 head, batch 1"] = VERSUS_OURS.format(fast=False, batch=1, **fmt)
    cases["openformers int4, fast head, batch 8"] = VERSUS_OURS.format(fast=True, batch=8, **fmt)
    gbs = run(BANDWIDTH.format(threads=args.threads))["gb_per_s"]
    print(f"memory read bandwidth, {args.threads} threads: {gbs:.1f} GB/s (torch.sum over 1 GiB, median of 7)", flush=True)
    results: dict[str, list[dict]] = {name: [] for name in cases}
    for round_ in range(args.repeat):
        for name, code in cases.items():
            results[name].append(run(code))
            ref = results.get("llama.cpp Q4_1, batch 1")
            runs = results[name]
            rate = statistics.median(r["tok_per_s"] for r in runs)
            step_ms = statistics.median(r["ms_per_step"] for r in runs)
            cpu_ms = statistics.median(r["cpu_ms_per_step"] for r in runs)
            mb = runs[0]["step_mb"]
            moved = mb / step_ms  # MB per ms = GB/s that the step's weight reads come to
            line = (f"[{round_ + 1}] {name:38s} {rate:7.1f} tok/s  step {step_ms:6.2f} ms (CPU {cpu_ms:6.2f} ms)  "
                    f"weights read {mb:6.1f} MB/step = {moved:5.1f} GB/s ({moved / gbs:4.0%} of measured)")
            if ref and not name.startswith("llama.cpp"):
                ref_rate = statistics.median(r["tok_per_s"] for r in ref)
                # the tokens both greedy runs share before they first differ (a near-tie flips by rounding)
                same = next((i for i, (x, y) in enumerate(zip(runs[0]["ids"], ref[0]["ids"])) if x != y), 16)
                line += f"  vs llama.cpp {rate / ref_rate:.2f}x, same first tokens: {same}/16"
            print(line, flush=True)


CHAT_HF = r"""
import time, sys
t0 = time.perf_counter()
import torch
torch.set_num_threads({threads})
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, TextStreamer
tok = AutoTokenizer.from_pretrained({folder!r}, gguf_file={name!r})
model = AutoModelForCausalLM.from_pretrained({folder!r}, gguf_file={name!r})
loaded = time.perf_counter()
messages = [{{"role": "user", "content": sys.stdin.readline().strip()}}]
inputs = tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=True, return_tensors="pt")

class Timed(TextStreamer):
    first = None
    def put(self, value):
        if not self.next_tokens_are_prompt and self.first is None:
            self.first = time.perf_counter()
        super().put(value)

streamer = Timed(tok, skip_prompt=True, skip_special_tokens=True)
start = time.perf_counter()
model.generate(**inputs, max_new_tokens=16, do_sample=False, streamer=streamer)
print(f"[loaded in {{loaded - t0:.2f}} s]", file=sys.stderr)
print(f"[first token {{(streamer.first - start) * 1000:.0f}} ms]", file=sys.stderr)
"""

QUESTION = "What is the capital of France?\n"


def first_text(cmd: list[str]) -> tuple[float, str, str]:
    """Run ``cmd`` with QUESTION on stdin: (seconds from start to its first stdout text, stdout, stderr)."""
    import os
    import time

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdin.write(QUESTION.encode())
    proc.stdin.close()
    proc.stdin = None  # written and closed: communicate() only reads
    first = os.read(proc.stdout.fileno(), 1)
    seconds = time.perf_counter() - start
    out, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(err.decode()[-2000:])
    return seconds, (first + out).decode(errors="replace"), err.decode()


def chat(args: argparse.Namespace) -> None:
    """Command start to first reply text, ``openformers chat`` against transformers."""
    from openformers.core.hub import embedded_model_path

    path = embedded_model_path("smollm2")
    ours = [sys.executable, "-m", "openformers.cli.main", "chat", "--timing", "--max-new-tokens", "16"]
    cases = {"openformers chat": ours, "openformers chat --quantized": ours + ["--quantized"],
             "transformers": [sys.executable, "-c", CHAT_HF.format(threads=args.threads, folder=str(path.parent),
                                                                    name=path.name)]}
    for _ in range(args.repeat):
        for name, cmd in cases.items():
            env_threads = ["env", f"OMP_NUM_THREADS={args.threads}"]
            seconds, out, err = first_text(env_threads + cmd)
            notes = " ".join(line.strip() for line in err.splitlines() if line.startswith("["))
            print(f"chat  {name:30s} first text after {seconds:6.2f} s  {notes}  reply: {out.strip()[:60]!r}", flush=True)


def run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["load", "decode", "llamacpp", "chat"])
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
    if args.only in (None, "llamacpp"):
        versus(args)
    if args.only in (None, "chat"):
        chat(args)


if __name__ == "__main__":
    main()
