"""Helpers scripts import from ``transformers.utils`` / ``datasets.utils``: log verbosity, version
checks, ``is_*_available()``, progress-bar switches and ``HfArgumentParser``."""
from openformers.utils import logging, versions  # noqa: F401
from openformers.utils.compat import API_VERSIONS, check_min_version
from openformers.utils.import_utils import (
    is_accelerate_available,
    is_bitsandbytes_available,
    is_datasets_available,
    is_evaluate_available,
    is_flash_attn_2_available,
    is_numpy_available,
    is_offline_mode,
    is_pandas_available,
    is_peft_available,
    is_protobuf_available,
    is_safetensors_available,
    is_scipy_available,
    is_sentencepiece_available,
    is_sklearn_available,
    is_tensorboard_available,
    is_tokenizers_available,
    is_torch_available,
    is_torch_bf16_cpu_available,
    is_torch_bf16_gpu_available,
    is_torch_cuda_available,
    is_torch_mps_available,
    is_torch_tpu_available,
    is_torch_xla_available,
    is_wandb_available,
)
from openformers.utils.progress import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
from openformers.utils.versions import require_version

__all__ = [
    "API_VERSIONS", "are_progress_bars_disabled", "check_min_version", "disable_progress_bars",
    "enable_progress_bars", "is_accelerate_available", "is_bitsandbytes_available", "is_datasets_available",
    "is_evaluate_available", "is_flash_attn_2_available", "is_numpy_available", "is_offline_mode",
    "is_pandas_available", "is_peft_available", "is_protobuf_available", "is_safetensors_available",
    "is_scipy_available", "is_sentencepiece_available", "is_sklearn_available", "is_tensorboard_available",
    "is_tokenizers_available", "is_torch_available", "is_torch_bf16_cpu_available", "is_torch_bf16_gpu_available",
    "is_torch_cuda_available", "is_torch_mps_available", "is_torch_tpu_available", "is_torch_xla_available",
    "is_wandb_available", "logging", "require_version", "versions",
]
