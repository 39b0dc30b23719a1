"""Quantization benchmark: 8-bit and 4-bit BitsAndBytesConfig against float32 on real weights.

For SmolLM2-135M-Instruct (the embedded GGUF, dequantized, then re-quantized layer by layer
while loading) and the embedded MiniLM-L6 encoder, each configuration is loaded in its own
subprocess and reports:
  * weight memory of the quantized linear layers (packed codes + scales) against their float32
    size, and the whole model's parameter + buffer bytes
  * load time and peak RSS of the process (import included)
  * SmolLM2: perplexity on ``benchmarks/data/heldout.txt`` (one forward over the whole text)
    and greedy decode speed (batch 1); MiniLM: cosine similarity of mean-pooled sentence
    embeddings to the float32 model's
The run fails (exit 1) when perplexity drifts beyond 2% (8-bit) or 10% (4-bit) of float32.

Run: ``python benchmarks/bench_quantization.py [--models smollm2 minilm] [--new-tokens 32] [--json out.json]``

Measured (2-core AMD EPYC, shared and heavily loaded: load average 10-17, so times are only
indicative; memory and perplexity are exact). SmolLM2's "float32" is the Q4_1 GGUF dequantized
(the only SmolLM2 weights available offline); "gguf-q4*" are not BitsAndBytesConfig: they keep
the file's own Q4_1 blocks (GGUFQuantizationConfig).

  model    kind          linear weights vs fp32   whole model   peak RSS after load   perplexity
  smollm2  float32       405.0 MiB   x1.000       513.1 MiB     878 MB                16.273
  smollm2  int8          101.8 MiB   x0.251       210.0 MiB     579 MB                16.341 (+0.42%)
  smollm2  nf4            57.0 MiB   x0.141       165.1 MiB     542 MB                20.595 (+26.6%)
  smollm2  nf4-dq         52.2 MiB   x0.129       160.4 MiB     536 MB                20.545 (+26.3%)
  smollm2  fp4            57.0 MiB   x0.141       165.1 MiB     542 MB                22.889 (+40.7%)
  smollm2  gguf-q4-bf16   63.3 MiB   x0.156       171.4 MiB     549 MB                16.281 (+0.05%)
  smollm2  gguf-q4        75.9 MiB   x0.188       184.1 MiB     547 MB                16.273 (+0.00%)
  minilm   int8           10.3 MiB   x0.252        55.9 MiB     cosine to fp32 mean 0.9995, min 0.9993
  minilm   nf4-dq          5.3 MiB   x0.129        50.9 MiB     cosine to fp32 mean 0.9715, min 0.9551
  minilm   fp4             5.8 MiB   x0.141        51.4 MiB     cosine to fp32 mean 0.9435, min 0.9105

8-bit is within the 2% perplexity target; NF4/FP4 miss the 10% target on this 135M model
whose weights are already 4-bit (Q4_1): re-quantizing them to NF4 blocks of 64 stacks a second
4-bit rounding on the first (the codes are bitsandbytes' own, bit for bit, so this is not an
encoder defect). Keeping the file's Q4_1 blocks meets it at 0.156x (bf16 compute). A per-block MSE-optimal scale (searched, same format) lowered the
weight error from 9.4% to 8.7% but raised perplexity, so the encoder keeps the plain absmax.
Sensitivity (NF4, first 512 tokens, float32 16.05 -> all layers 4-bit 19.69, +22.7%): keeping
``down_proj`` float (``llm_int8_skip_modules=["down_proj"]``) gives 18.11 (+12.8%), the first and
last layer float 18.92, ``v_proj`` float 19.45, the whole MLP float 17.35 (+8.1%).
Decoding with 4-bit layers is slower than float32 on the CPU: each forward dequantizes every
weight (a table gather, ~1.5 ms per 1536 x 576 layer); PyTorch's int4 kernel computes an affine
int4 format, not NF4/FP4, and its int8 weight-only kernel measured slower than
dequantize-then-matmul, so neither is used.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIGS: dict[str, dict] = {
    "float32": {},
    "int8": {"load_in_8bit": True},
    "nf4": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"},
    "nf4-dq": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True},
    "fp4": {"load_in_4bit": True, "bnb_4bit_quant_type": "fp4"},
}
# not BitsAndBytesConfig: the GGUF file's own Q4_0/Q4_1 blocks kept as they are (SmolLM2 only)
GGUF_CONFIGS: dict[str, dict] = {
    "gguf-q4": {"compute_dtype": "float32"},
    "gguf-q4-bf16": {"compute_dtype": "bfloat16"},
}
PPL_TOLERANCE = {"int8": 0.02, "nf4": 0.10, "nf4-dq": 0.10, "fp4": 0.10, "gguf-q4": 0.10, "gguf-q4-bf16": 0.10}
LABELS = {
    "nf4": "NF4, re-quantized from the Q4_1 file", "nf4-dq": "NF4 + double quant, re-quantized from the Q4_1 file",
    "fp4": "FP4, re-quantized from the Q4_1 file",
    "gguf-q4": "the file's Q4_1 blocks kept (GGUFQuantizationConfig, fp32 compute), not NF4",
    "gguf-q4-bf16": "the file's Q4_1 blocks kept (GGUFQuantizationConfig, bf16 compute), not NF4",
}


def _quantized_bytes(model) -> tuple[int, int]:
    """(packed bytes, float32 bytes) over bitsandbytes-style and GGUF 4-bit layers."""
    from openformers.quantization import QuantizedLinear, quantized_weight_bytes

    packed, full = quantized_weight_bytes(model)
    for module in model.modules():
        if isinstance(module, QuantizedLinear):
            packed += sum(b.numel() * b.element_size() for b in module.buffers(recurse=False) if b is not None)
            full += module.in_features * module.out_features * 4
    return packed, full


def _worker(model_name: str, kind: str, new_tokens: int, out_file: str) -> None:
    import resource
    import time

    t0 = time.perf_counter()
    import torch

    import openformers
    from openformers.quantization import GGUFQuantizationConfig

    torch.manual_seed(0)
    if kind in GGUF_CONFIGS:
        qc = GGUFQuantizationConfig(compute_dtype=getattr(torch, GGUF_CONFIGS[kind]["compute_dtype"]))
    else:
        qc = openformers.BitsAndBytesConfig(**CONFIGS[kind]) if CONFIGS[kind] else None
    tok = openformers.AutoTokenizer.from_pretrained(model_name)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    auto = openformers.AutoModelForCausalLM if model_name == "smollm2" else openformers.AutoModel
    model = auto.from_pretrained(model_name, quantization_config=qc)
    load_s = time.perf_counter() - t0
    peak_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    packed, full = _quantized_bytes(model)
    seen: set[int] = set()
    footprint = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            footprint += t.numel() * t.element_size()
    result = {
        "model": model_name, "kind": kind, "load_s": load_s, "rss_before_load_mb": rss_before, "peak_rss_load_mb": peak_load,
        "quantized_weight_bytes": packed, "their_fp32_bytes": full, "model_bytes": footprint,
    }
    text = (HERE / "data" / "heldout.txt").read_text()
    with torch.inference_mode():
        if model_name == "smollm2":
            ids = tok(text, return_tensors="pt").input_ids
            t1 = time.perf_counter()
            logits = model(ids).logits[0, :-1].float()
            result["ppl_forward_s"] = time.perf_counter() - t1
            nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:])
            result["tokens"] = int(ids.shape[1])
            result["perplexity"] = float(torch.exp(nll))
            prompt = tok("The old lighthouse stood at the end of", return_tensors="pt").input_ids
            model.generate(prompt, max_new_tokens=2, do_sample=False)
            t1 = time.perf_counter()
            out = model.generate(prompt, max_new_tokens=new_tokens, do_sample=False, min_new_tokens=new_tokens)
            dt = time.perf_counter() - t1
            result["decode_tok_s"] = (out.shape[1] - prompt.shape[1]) / dt
            result["sample"] = tok.decode(out[0, prompt.shape[1]:])
        else:
            sentences = [s.strip() for s in text.replace("\n", " ").split(". ") if s.strip()][:32]
            batch = tok(sentences, padding=True, truncation=True, max_length=128, return_tensors="pt")
            t1 = time.perf_counter()
            hidden = model(**batch).last_hidden_state.float()
            result["encode_s"] = time.perf_counter() - t1
            mask = batch["attention_mask"][..., None].float()
            emb = (hidden * mask).sum(1) / mask.sum(1)
            result["embeddings"] = torch.nn.functional.normalize(emb, dim=-1).tolist()
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(out_file).write_text(json.dumps(result))


def _run(model_name: str, kind: str, new_tokens: int, threads: int | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        env = dict(os.environ)
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        cmd = [sys.executable, __file__, "--worker", model_name, kind, str(new_tokens), out]
        subprocess.run(cmd, check=True, env=env, cwd=HERE.parent)
        return json.loads(Path(out).read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["smollm2", "minilm"])
    parser.add_argument("--kinds", nargs="+", default=["float32", "int8", "nf4", "nf4-dq", "fp4", "gguf-q4", "gguf-q4-bf16"])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", nargs=4, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        name, kind, new_tokens, out = args.worker
        _worker(name, kind, int(new_tokens), out)
        return 0
    kinds = ["float32"] + [k for k in args.kinds if k != "float32"]
    results: list[dict] = []
    ok = True
    for model_name in args.models:
        base: dict = {}
        base_emb = None
        for kind in kinds:
            if kind in GGUF_CONFIGS and model_name != "smollm2":
                continue  # only a GGUF source has blocks to keep
            r = _run(model_name, kind, args.new_tokens, args.threads)
            if kind == "float32":
                base = r
            ratio = r["quantized_weight_bytes"] / r["their_fp32_bytes"] if r["their_fp32_bytes"] else 1.0
            line = (f"{model_name:8s} {kind:8s} linear weights {r['quantized_weight_bytes'] / 2**20:7.1f} MiB "
                    f"(x{ratio:.3f} of fp32 {r['their_fp32_bytes'] / 2**20:.1f} MiB)  model {r['model_bytes'] / 2**20:6.1f} MiB  "
                    f"load {r['load_s']:5.1f} s  peak RSS {r['rss_before_load_mb']:.0f} -> {r['peak_rss_load_mb']:.0f} (load) "
                    f"-> {r['peak_rss_mb']:.0f} MB (run)")
            if model_name == "smollm2":
                rel = r["perplexity"] / base["perplexity"] - 1
                r["perplexity_vs_fp32"] = rel
                line += f"  ppl {r['perplexity']:.3f} ({rel:+.2%})  ppl fwd {r['ppl_forward_s']:.2f} s  decode {r['decode_tok_s']:.1f} tok/s"
                if kind in PPL_TOLERANCE and abs(rel) > PPL_TOLERANCE[kind]:
                    ok = False
                    line += f"  FAIL (limit {PPL_TOLERANCE[kind]:.0%})"
                if kind in LABELS:
                    line += f"  [{LABELS[kind]}]"
            else:
                import torch

                emb = torch.tensor(r.pop("embeddings"))
                if kind == "float32":
                    base_emb = emb
                a, b = emb, base_emb
                cos = (a * b).sum(-1)
                r["cosine_min"], r["cosine_mean"] = float(cos.min()), float(cos.mean())
                line += f"  cos to fp32 mean {r['cosine_mean']:.4f} min {r['cosine_min']:.4f}  encode {r['encode_s']:.2f} s"
            print(line, flush=True)
            results.append(r)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
