"""The decode plan's per-step validity check (``DecodePlan.valid``, ``runtime/decode.py``) alone.

Before every decode step the plan checks that the model is still what its kept kernels were made from (the
same modules, running as themselves, the same tensors, the LoRA adapters' state). This times that check on
SmolLM2-135M float32 (30 layers), without adapters and with a rank-8 LoRA on all 7 projections of every
layer (``q/k/v/o/gate/up/down``), after one short ``generate`` has built the plan.

Reported: the median of ``--repeats`` timings of ``--calls`` checks each, in microseconds a check.

Run: ``python benchmarks/bench_plan_valid.py [--calls 200] [--repeats 7]``
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    ns = parser.parse_args(argv)

    import torch

    from openformers import AutoModelForCausalLM
    from openformers.peft import LoraConfig, get_peft_model
    from openformers.runtime import decode

    def timed(model: Any, stack: Any) -> float:
        with torch.no_grad():
            model.generate(input_ids=torch.tensor([[1, 2, 3, 4]]), max_new_tokens=3, do_sample=False)
        plan = decode.plan_of(stack)
        assert plan is not None and plan.valid(stack), "no decode plan was built"
        runs = []
        for _ in range(ns.repeats):
            t = time.perf_counter()
            for _ in range(ns.calls):
                plan.valid(stack)
            runs.append((time.perf_counter() - t) / ns.calls * 1e6)
        return statistics.median(runs)

    load_before = open("/proc/loadavg").read().split()[:3]
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained("smollm2").eval()
    plain = timed(base, base.model)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets,
                                           task_type="CAUSAL_LM")).eval()
    lora = timed(peft, peft.base_model.model.model)
    load_after = open("/proc/loadavg").read().split()[:3]
    print(f"plan.valid, no adapters:        {plain:8.1f} us a check")
    print(f"plan.valid, LoRA on 7 of 7:     {lora:8.1f} us a check")
    print(f"threads {torch.get_num_threads()}, load average before {load_before} after {load_after}")
    return {"plain_us": plain, "lora_us": lora, "loadavg_before": load_before, "loadavg_after": load_after}


if __name__ == "__main__":
    main()
