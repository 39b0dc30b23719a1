"""One batched decode step of the serving engine's slot cache beside one of ``generate()``'s cache.

The same model (the embedded SmolLM2-135M-Instruct: float32, ``--dtype bfloat16``, or ``--quantized``, the
GGUF's 4-bit weights kept), the same batch of ``--batch`` sequences of about ``--length`` positions, one
new token a row, in one process: the median CPU time of a step

- with ``generate()``'s ``DynamicCache`` (every row at one length, no mask; the runtime's native step);
- with the engine's ``SlotCache``: rows of one length (no mask), rows of different lengths (a mask),
  and rows of different lengths in slots that are not consecutive; each on the runtime's native step
  over the slot cache's rows (``native_rows``) and on the module path (the same cache without
  ``native_rows``: the layers' PyTorch operators, as the server ran before the native row step).

    python benchmarks/bench_serve_step.py --batch 32 --length 200 --threads 1
    python benchmarks/bench_serve_step.py --batch 16 --length 200 --threads 1 --quantized
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def median_cpu_ms(step, repeats: int) -> float:
    step()
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        step()
        times.append(time.process_time() - t0)
    return 1000 * sorted(times)[len(times) // 2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32, help="rows decoded together")
    ap.add_argument("--length", type=int, default=200, help="cached positions per row")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fairer on a loaded machine)")
    ap.add_argument("--repeats", type=int, default=5, help="steps timed per case (the median is reported)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--quantized", action="store_true", help="the GGUF's 4-bit weights kept (as serve --quantized)")
    args = ap.parse_args()
    import openformers
    from openformers import AutoModelForCausalLM
    from openformers.modules.cache import DynamicCache
    from openformers.serving.cache import SlotCache

    class ModulePathSlotCache(SlotCache):
        native_rows = None  # no rows offered to the runtime: the layers run as modules, writing through update()

    torch.set_grad_enabled(False)
    torch.set_num_threads(args.threads)
    b, n = args.batch, args.length
    if args.quantized:
        from openformers.quantization import GGUFQuantizationConfig
        model = AutoModelForCausalLM.from_pretrained(openformers.embedded_model_path("smollm2"),
                                                     quantization_config=GGUFQuantizationConfig()).eval()
    else:
        model = AutoModelForCausalLM.from_pretrained("smollm2", torch_dtype=getattr(torch, args.dtype)).eval()
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    kind = "4-bit kept" if args.quantized else args.dtype
    print(f"# CPU: {cpu}; load average at start: {load}; {kind}, batch {b}, {n} positions, {args.threads} thread(s)")
    prompt = torch.randint(100, 1000, (1, n))
    nxt = torch.randint(100, 1000, (b, 1))
    dynamic = DynamicCache()
    model(input_ids=prompt.expand(b, n), past_key_values=dynamic, use_cache=True)

    def generate_step() -> None:
        model(input_ids=nxt, past_key_values=dynamic, use_cache=True, logits_to_keep=1)
        dynamic.crop(n)

    results = {"generate (DynamicCache, no mask)": median_cpu_ms(generate_step, args.repeats)}
    for label, cls in (("native rows", SlotCache), ("module path", ModulePathSlotCache)):
        slots = cls(2 * b, n + 8)
        for slot in range(2 * b):
            slots.bind([slot], [0], n)
            model(input_ids=prompt, past_key_values=slots, use_cache=True, logits_to_keep=1)
        spread = [n - (i % 4) for i in range(b)]
        for name, lengths, bound in [("one length", [n] * b, list(range(b))),
                                     ("different lengths", spread, list(range(b))),
                                     ("different lengths, slots not consecutive", spread, list(range(0, 2 * b, 2)))]:
            lens = torch.tensor(lengths)

            def engine_step() -> None:
                slots.bind(bound, lengths, 1)
                past = max(lengths)
                mask = None if min(lengths) == past else (torch.arange(past + 1)[None] <= lens[:, None]).long()
                model(input_ids=nxt, attention_mask=mask, position_ids=lens[:, None], past_key_values=slots,
                      use_cache=True, logits_to_keep=1)

            results[f"engine, {label}, {name}"] = median_cpu_ms(engine_step, args.repeats)
            if label == "native rows" and slots.written:
                print(f"# engine, {label}, {name}: the native step was not taken (the module path ran)")
    base = results["generate (DynamicCache, no mask)"]
    for name, ms in results.items():
        print(f"{name}: {ms:.1f} ms CPU per step ({ms / base:.2f}x)")
    with open("/proc/loadavg") as f:
        print(f"# load average at end: {' '.join(f.read().split()[:3])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
