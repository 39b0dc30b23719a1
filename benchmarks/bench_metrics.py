"""Metric speed: openformers.metrics next to the reference packages the `evaluate` metrics wrap.

Same synthetic corpus for both sides; each timing is the best of ``--repeat`` runs.

    python benchmarks/bench_metrics.py                 # 2,000 sentence pairs
    python benchmarks/bench_metrics.py --pairs 20000
"""
from __future__ import annotations

import argparse
import random
import time
from typing import Any, Callable


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import numpy as np

    from openformers.metrics import load

    rng = random.Random(0)
    words = "the cat sat on a mat while dogs ran quickly over 3.5 happy fields , . !".split()
    sent = lambda: " ".join(rng.choice(words) for _ in range(rng.randint(5, 30)))  # noqa: E731
    preds = [sent() for _ in range(args.pairs)]
    refs = [sent() for _ in range(args.pairs)]
    labels = np.random.RandomState(0).randint(0, 5, args.pairs * 50)
    guesses = np.random.RandomState(1).randint(0, 5, args.pairs * 50)

    rows: list[tuple[str, Callable[[], Any], Callable[[], Any] | None]] = []
    try:
        import sacrebleu

        rows.append(("sacrebleu", lambda: load("sacrebleu").compute(predictions=preds, references=refs),
                     lambda: sacrebleu.corpus_bleu(preds, [refs])))
    except ImportError:
        rows.append(("sacrebleu", lambda: load("sacrebleu").compute(predictions=preds, references=refs), None))
    try:
        import jiwer

        rows.append(("wer", lambda: load("wer").compute(predictions=preds, references=refs), lambda: jiwer.wer(refs, preds)))
        rows.append(("cer", lambda: load("cer").compute(predictions=preds, references=refs), lambda: jiwer.cer(refs, preds)))
    except ImportError:
        pass
    try:
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"])
        rows.append(("rouge", lambda: load("rouge").compute(predictions=preds, references=refs, use_aggregator=False),
                     lambda: [scorer.score(r, p) for p, r in zip(preds, refs)]))
    except ImportError:
        pass
    try:
        from sklearn.metrics import f1_score

        rows.append(("f1 macro", lambda: load("f1").compute(predictions=guesses, references=labels, average="macro"),
                     lambda: f1_score(labels, guesses, average="macro")))
    except ImportError:
        pass

    print(f"{'metric':<10} {'openformers s':>14} {'reference s':>12} {'speed-up':>9}")
    for name, ours, theirs in rows:
        t_ours = best_of(ours, args.repeat)
        t_ref = best_of(theirs, args.repeat) if theirs else float("nan")
        print(f"{name:<10} {t_ours:>14.4f} {t_ref:>12.4f} {t_ref / t_ours:>8.2f}x")


if __name__ == "__main__":
    main()
