"""Decode speed of an installed wheel against the editable checkout: the same code, two installs.

Builds a wheel of this checkout, installs it (no dependencies, no index) in a fresh virtual
environment that sees the shared site-packages (torch and the rest), and times greedy decoding of
the embedded SmolLM2 in a child process of each interpreter: the checkout (``PYTHONPATH`` = this
tree) and the wheel's venv (run from an empty directory, so the checkout is not importable there).
Each child compiles its native kernels into its own cache directory and reports where openformers
was imported from, which native kernels loaded, and tokens per second and per CPU-second for each
case. Children alternate (checkout, wheel, checkout, ...) for ``--rounds`` rounds; the best of each
side is compared.

Run: ``python benchmarks/bench_wheel.py [--rounds 3] [--new-tokens 64] [--threads 1]``
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time, torch
import openformers
from openformers import AutoModelForCausalLM, GGUFQuantizationConfig
from openformers.core import native
threads, new_tokens = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
out = {"location": openformers.__file__, "cases": {}}
cases = [("float32", {}), ("bfloat16", {"torch_dtype": torch.bfloat16}),
         ("q4 kept", {"quantization_config": GGUFQuantizationConfig()})]
ids = torch.arange(100, 132).unsqueeze(0)
for name, kw in cases:
    model = AutoModelForCausalLM.from_pretrained("smollm2", **kw).eval()
    model.generate(ids, max_new_tokens=8, do_sample=False)  # warm-up (and first compile)
    best = None
    for _ in range(2):
        w, c = time.perf_counter(), time.process_time()
        toks = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        w, c = time.perf_counter() - w, time.process_time() - c
        if best is None or w < best[0]:
            best = (w, c, toks[0, -new_tokens:].tolist())
    out["cases"][name] = {"tok_s": new_tokens / best[0], "tok_cpu_s": new_tokens / best[1], "tokens": best[2]}
out["kernels"] = {lib.name: (str(lib.path) if lib.path else lib.error) for lib in native.libraries()}
print("RESULT " + json.dumps(out))
"""


def build_wheel_venv(work: Path) -> Path:
    tree = work / "src"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, tree / name)
    shutil.copytree(ROOT / "openformers", tree / "openformers", ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyc"))
    wheels = work / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(wheels), str(tree)], check=True)
    (wheel,) = wheels.glob("openformers-*.whl")
    env_dir = work / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "--force-reinstall", "-q", str(wheel)], check=True)
    return python


def run_child(python: Path, cwd: Path, env: dict, threads: int, new_tokens: int) -> dict:
    done = subprocess.run([str(python), "-c", CHILD, str(threads), str(new_tokens)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    a = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        wheel_python = build_wheel_venv(work)
        elsewhere = work / "elsewhere"
        elsewhere.mkdir()
        base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OPENFORMERS_CACHE")}
        sides = {
            "checkout": (Path(sys.executable), ROOT, {**base, "PYTHONPATH": str(ROOT), "OPENFORMERS_CACHE": str(work / "c1")}),
            "wheel": (wheel_python, elsewhere, {**base, "OPENFORMERS_CACHE": str(work / "c2")}),
        }
        best: dict[str, dict] = {}
        for r in range(a.rounds):
            for side, (python, cwd, env) in sides.items():
                res = run_child(python, cwd, env, a.threads, a.new_tokens)
                print(f"round {r} {side}: from {res['location']}; kernels {res['kernels']}; "
                      + ", ".join(f"{k} {v['tok_s']:.1f} tok/s ({v['tok_cpu_s']:.1f}/CPU-s)" for k, v in res["cases"].items()),
                      flush=True)
                keep = best.setdefault(side, res)
                for k, v in res["cases"].items():
                    if v["tok_s"] > keep["cases"][k]["tok_s"]:
                        keep["cases"][k] = v
        assert str(work / "venv") in best["wheel"]["location"], best["wheel"]["location"]
        print(f"\nload average: {open('/proc/loadavg').read().split()[:3]}")
        print(f"{'case':>10} {'checkout tok/s':>15} {'wheel tok/s':>12} {'wheel/checkout':>15} {'per CPU-s':>10} same tokens")
        for k in best["checkout"]["cases"]:
            c, w = best["checkout"]["cases"][k], best["wheel"]["cases"][k]
            print(f"{k:>10} {c['tok_s']:15.1f} {w['tok_s']:12.1f} {w['tok_s'] / c['tok_s']:14.3f}x "
                  f"{w['tok_cpu_s'] / c['tok_cpu_s']:9.3f}x {c['tokens'] == w['tokens']}")


if __name__ == "__main__":
    main()
