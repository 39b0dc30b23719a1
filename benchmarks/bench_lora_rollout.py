"""The rollout ``generate`` of ``bench_rl.py``'s GRPO task alone: SmolLM2-135M float32 with a rank-8 LoRA on
q/k/v/o (alpha 16), 2 chat prompts x 8 completions, left-padded, sampled at temperature 1 for 32 new tokens
(``min_new_tokens`` too, so every run decodes the same number of steps), in eval mode under no_grad.

Three ways, interleaved in one process (one run of each per round, so drift on a shared machine hits all
alike), after a warm-up run of each:

- ``modules``: our model with the decode plan turned off (every call runs the module tree with the LoRA side
  products): what ran before the runtime covered LoRA layers;
- ``plan``: our model as shipped: the decode plan over merged copies of the adapted weights
  (``runtime/adapters.py``);
- ``hf``: transformers + peft's ``generate`` on the same weights and adapter values (``--no-hf`` skips it).

Before every round the adapter's B matrices get a small in-place update, as an optimizer step would give
them, so the ``plan`` runs include remaking the merged copies. Reported: median wall seconds and median CPU
seconds (``time.process_time``, all threads: steadier than wall time on a busy machine) per generate, and
the ratios to ``modules``.

Run: ``python benchmarks/bench_lora_rollout.py [--rounds 5] [--no-hf] [--json out.json]``
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-hf", action="store_true")
    parser.add_argument("--json", default=None)
    ns = parser.parse_args(argv)

    import torch

    from benchmarks.bench_rl import prepare_weights
    from openformers import AutoModelForCausalLM, AutoTokenizer
    from openformers.peft import LoraConfig, get_peft_model
    from openformers.runtime import decoder

    weights = prepare_weights(Path(tempfile.gettempdir()) / "openformers-bench-rl")
    tok = AutoTokenizer.from_pretrained(weights)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    rows = [json.loads(line) for line in open(ROOT / "examples/data/instructions.jsonl") if line.strip()][:2]
    prompts = [tok.apply_chat_template([{"role": "user", "content": r["instruction"]}], add_generation_prompt=True)
               for r in rows]
    prompts = [list(p) for p in prompts for _ in range(8)]
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1

    lora = dict(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    torch.manual_seed(0)
    ours = get_peft_model(AutoModelForCausalLM.from_pretrained(weights), LoraConfig(**lora, task_type="CAUSAL_LM")).eval()
    with torch.no_grad():  # a trained adapter: B is not zero
        for n, p in ours.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 1e-3)
    theirs = None
    if not ns.no_hf:
        import peft as hf_peft
        import transformers

        hf = transformers.AutoModelForCausalLM.from_pretrained(weights, dtype=torch.float32)
        theirs = hf_peft.get_peft_model(hf, hf_peft.LoraConfig(**lora, task_type="CAUSAL_LM")).eval()

    def sync() -> None:  # the adapter values ours has now, into theirs (same names below base_model.model)
        if theirs is not None:
            mine = {n: p for n, p in ours.named_parameters() if "lora_" in n}
            with torch.no_grad():
                for n, p in theirs.named_parameters():
                    if "lora_" in n:
                        p.copy_(mine[n])

    gen = dict(attention_mask=mask, do_sample=True, temperature=1.0, top_p=1.0, top_k=None, max_new_tokens=32,
               min_new_tokens=32, pad_token_id=tok.pad_token_id)
    real_plan_for = decoder.plan_for

    def run(way: str) -> tuple[float, float]:
        torch.manual_seed(1)
        decoder.plan_for = (lambda m: None) if way == "modules" else real_plan_for
        model = theirs if way == "hf" else ours
        try:
            with torch.no_grad():
                t, c = time.perf_counter(), time.process_time()
                out = model.generate(input_ids=ids, **gen)
                t, c = time.perf_counter() - t, time.process_time() - c
        finally:
            decoder.plan_for = real_plan_for
        assert out.shape[1] == width + 32
        print(f"  {way:8s} {t:.2f} s wall, {c:.2f} s cpu", flush=True)
        return t, c

    ways = ["modules", "plan"] + ([] if theirs is None else ["hf"])
    sync()
    for way in ways:  # warm-up
        run(way)
    times: dict[str, list[tuple[float, float]]] = {w: [] for w in ways}
    load_before = open("/proc/loadavg").read().split()[:3]
    for _ in range(ns.rounds):
        with torch.no_grad():  # an optimizer step's in-place update of the adapter
            for n, p in ours.named_parameters():
                if "lora_B" in n:
                    p.add_(torch.randn_like(p), alpha=1e-4)
        sync()
        for way in ways:
            times[way].append(run(way))
    report: dict[str, Any] = {"loadavg_before": load_before, "loadavg_after": open("/proc/loadavg").read().split()[:3],
                              "threads": torch.get_num_threads(), "rounds": ns.rounds}
    base_wall = statistics.median(t for t, _ in times["modules"])
    base_cpu = statistics.median(c for _, c in times["modules"])
    for way in ways:
        wall, cpu = statistics.median(t for t, _ in times[way]), statistics.median(c for _, c in times[way])
        report[way] = {"wall_s": wall, "cpu_s": cpu, "wall_speedup_vs_modules": base_wall / wall,
                       "cpu_speedup_vs_modules": base_cpu / cpu, "all": times[way]}
        print(f"{way:8s} wall {wall:.3f} s  cpu {cpu:.3f} s  speed vs modules: wall {base_wall / wall:.2f}x  "
              f"cpu {base_cpu / cpu:.2f}x", flush=True)
    print(f"load average before {report['loadavg_before']} after {report['loadavg_after']}")
    if ns.json:
        Path(ns.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
