"""Size arithmetic and stratification for ``train_test_split``."""
from __future__ import annotations

import math

import numpy as np


def split_sizes(n: int, test_size: float | int | None, train_size: float | int | None) -> tuple[int, int]:
    if test_size is None and train_size is None:
        test_size = 0.25
    for arg, v in (("test_size", test_size), ("train_size", train_size)):
        if v is None:
            continue
        if isinstance(v, float) and not 0 < v < 1:
            raise ValueError(f"{arg}={v} must be a float in (0, 1) or an int in (0, {n})")
        if isinstance(v, int) and not 0 < v < n:
            raise ValueError(f"{arg}={v} must be a float in (0, 1) or an int in (0, {n})")
    n_test = (math.ceil(test_size * n) if isinstance(test_size, float) else int(test_size)) if test_size is not None else None
    n_train = (math.floor(train_size * n) if isinstance(train_size, float) else int(train_size)) if train_size is not None else None
    if n_train is None:
        n_train = n - n_test  # type: ignore[operator]
    if n_test is None:
        n_test = n - n_train
    if n_train + n_test > n:
        raise ValueError(f"train_size + test_size = {n_train + n_test} rows exceeds the dataset size {n}")
    if n_train == 0 or n_test == 0:
        raise ValueError(f"train_test_split with {n} rows gives an empty split (train={n_train}, test={n_test}); "
                         "adjust test_size / train_size")
    return n_test, n_train


def stratified_split(labels: np.ndarray, n_train: int, n_test: int,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    classes, inv = np.unique(labels, return_inverse=True)
    train, test = [], []
    frac = n_test / (n_train + n_test)
    for c in range(len(classes)):
        idx = rng.permutation(np.nonzero(inv == c)[0])
        k = int(round(len(idx) * frac))
        test.extend(idx[:k])
        train.extend(idx[k:])
    train_arr, test_arr = rng.permutation(np.array(train, dtype=np.int64)), rng.permutation(np.array(test, dtype=np.int64))
    return train_arr[:n_train], test_arr[:n_test]
