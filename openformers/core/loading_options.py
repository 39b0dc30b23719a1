"""Loading keywords of the Hugging Face ``from_pretrained`` methods that mean nothing here.

Scripts pass them out of habit (``low_cpu_mem_usage=True``, ``use_safetensors=True``,
``resume_download=True``, ...). Loading here already streams tensors onto the meta-built model,
prefers safetensors, never downloads and never offloads to disk, so these keywords are accepted
and dropped. The few that ask for something this library cannot do (TensorFlow or Flax weights)
raise an error that says how to get a PyTorch or safetensors checkpoint instead.
"""
from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("openformers.loading")

# keyword -> why it changes nothing here (shown at DEBUG level)
NO_OP_MODEL_KWARGS: dict[str, str] = {
    "low_cpu_mem_usage": "tensors are always streamed onto a model built on the meta device",
    "_fast_init": "weights the checkpoint holds are never initialised first",
    "use_safetensors": "safetensors files are always preferred; .bin files load with weights_only=True",
    "weights_only": ".bin files are always read with weights_only=True",
    "force_download": "nothing is downloaded: files come from local folders and the Hugging Face cache",
    "resume_download": "nothing is downloaded",
    "proxies": "nothing is downloaded",
    "mirror": "nothing is downloaded",
    "use_auth_token": "nothing is downloaded",
    "_commit_hash": "the revision is read from the cache's refs",
    "_from_auto": "internal flag of the Hugging Face Auto classes",
    "_from_pipeline": "internal flag of the Hugging Face pipelines",
    "offload_folder": "weights are never offloaded to disk",
    "offload_state_dict": "weights are never offloaded to disk",
    "offload_buffers": "weights are never offloaded to disk",
    "max_memory": "device_map places whole models; per-device memory caps are not used",
    "disable_mmap": "safetensors files are read with the reader's own mapping",
    "tqdm_class": "the loading bar is the library's own tqdm (hidden by disable_progress_bars())",
    "use_kernels": "kernels from the Hub are never downloaded; the built-in fast paths are used",
    "allow_all_kernels": "kernels from the Hub are never downloaded",
    "kernel_config": "kernels from the Hub are never downloaded",
    "fusion_config": "fused projections are chosen at run time",
    "key_mapping": "checkpoint names are mapped by the family's own rules",
    "variant": "the checkpoint's default files are read",
    "device_mesh": "tensor parallelism is not used by from_pretrained",
    "tp_plan": "tensor parallelism is not used by from_pretrained",
    "tp_size": "tensor parallelism is not used by from_pretrained",
    "distributed_config": "tensor parallelism is not used by from_pretrained",
    "adapter_kwargs": "load adapters with PeftModel.from_pretrained",
    "adapter_name": "load adapters with PeftModel.from_pretrained",
    "use_flash_attention_2": "attention runs through PyTorch's SDPA (attn_implementation='sdpa', the default)",
    "experts_implementation": "no mixture-of-experts family is built in",
}

_CONVERT = (
    "openformers reads PyTorch (.bin, read with weights_only=True) and safetensors weights. Convert the "
    "checkpoint once where that framework is installed, for example with transformers: "
    "`AutoModel.from_pretrained(path, {flag}=True).save_pretrained(out_dir)` writes model.safetensors "
    "into out_dir, which loads here."
)


def pop_model_loading_options(kwargs: dict[str, Any], owner: str) -> dict[str, Any]:
    """Remove the reference's loading keywords from ``kwargs`` (in place).

    Returns the ones that change the result here: ``return_dict`` and the ``load_in_4bit`` /
    ``load_in_8bit`` shorthands (``generation_config`` is returned too). Raises for
    ``from_tf`` / ``from_flax`` (with how to convert).
    """
    for flag, framework in (("from_tf", "TensorFlow"), ("from_flax", "Flax")):
        if kwargs.pop(flag, False):
            raise ValueError(
                f"{owner}.from_pretrained({flag}=True): {framework} checkpoints cannot be read. "
                + _CONVERT.format(flag=flag)
            )
    for key in list(kwargs):
        if key in NO_OP_MODEL_KWARGS:
            value = kwargs.pop(key)
            logger.debug("%s.from_pretrained(%s=%r) has no effect: %s", owner, key, value, NO_OP_MODEL_KWARGS[key])
    kept: dict[str, Any] = {}
    for key in ("return_dict", "load_in_4bit", "load_in_8bit", "generation_config"):
        if key in kwargs:
            kept[key] = kwargs.pop(key)
    return kept


def shorthand_quantization(kept: dict[str, Any], quantization_config: Any, owner: str) -> Any:
    """``load_in_4bit=True`` / ``load_in_8bit=True`` as a ``BitsAndBytesConfig``, as the reference once did."""
    four, eight = bool(kept.get("load_in_4bit")), bool(kept.get("load_in_8bit"))
    if not (four or eight):
        return quantization_config
    if quantization_config is not None:
        raise ValueError(
            f"{owner}.from_pretrained: pass either quantization_config or load_in_4bit/load_in_8bit, not both"
        )
    if four and eight:
        raise ValueError(f"{owner}.from_pretrained: load_in_4bit and load_in_8bit cannot both be True")
    from openformers.quantization import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=four, load_in_8bit=eight)
