"""``is_*_available()`` checks that scripts written for the Hugging Face stack call.

Where openformers itself provides the capability (datasets, peft, evaluate, tokenizers,
safetensors) the answer is True; otherwise it says whether the package is installed.
"""
from __future__ import annotations

import importlib.util
from functools import lru_cache


@lru_cache(maxsize=None)
def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def is_torch_available() -> bool:
    return _installed("torch")


def is_torch_cuda_available() -> bool:
    if not is_torch_available():
        return False
    import torch

    return torch.cuda.is_available()


def is_torch_bf16_gpu_available() -> bool:
    if not is_torch_cuda_available():
        return False
    import torch

    return torch.cuda.is_bf16_supported()


def is_torch_bf16_cpu_available() -> bool:
    return is_torch_available()


def is_torch_tpu_available(check_device: bool = True) -> bool:
    return False


def is_torch_xla_available(*args: object, **kwargs: object) -> bool:
    return False


def is_torch_mps_available() -> bool:
    if not is_torch_available():
        return False
    import torch

    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def is_tokenizers_available() -> bool:
    return _installed("tokenizers")


def is_safetensors_available() -> bool:
    return True  # openformers reads and writes safetensors itself


def is_datasets_available() -> bool:
    return True  # openformers.data


def is_peft_available() -> bool:
    return True  # openformers.peft


def is_evaluate_available() -> bool:
    return True  # openformers.metrics


def is_accelerate_available(min_version: str | None = None) -> bool:
    return _installed("openformers.distributed")


def is_sentencepiece_available() -> bool:
    return _installed("sentencepiece")


def is_protobuf_available() -> bool:
    return _installed("google.protobuf")


def is_sklearn_available() -> bool:
    return _installed("sklearn")


def is_scipy_available() -> bool:
    return _installed("scipy")


def is_numpy_available() -> bool:
    return _installed("numpy")


def is_pandas_available() -> bool:
    return _installed("pandas")


def is_tensorboard_available() -> bool:
    return _installed("tensorboard") or _installed("tensorboardX")


def is_wandb_available() -> bool:
    return _installed("wandb")


def is_bitsandbytes_available() -> bool:
    return True  # openformers.quantization provides 4-bit and 8-bit layers


def is_flash_attn_2_available() -> bool:
    return False  # attention runs through PyTorch's SDPA


def is_offline_mode() -> bool:
    return True  # openformers never reaches the network
