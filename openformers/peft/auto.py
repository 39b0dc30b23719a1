"""``AutoPeftModelFor*``: load the base model named in ``adapter_config.json``, then the adapter."""
from __future__ import annotations

import os
from typing import Any

from openformers.peft.config import PeftConfig
from openformers.peft.model import (
    PeftModel,
    PeftModelForCausalLM,
    PeftModelForFeatureExtraction,
    PeftModelForQuestionAnswering,
    PeftModelForSequenceClassification,
    PeftModelForTokenClassification,
)


class _AutoPeftModel:
    _auto_class: str = "AutoModel"
    _peft_class: type[PeftModel] = PeftModel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(f"{type(self).__name__} is used through {type(self).__name__}.from_pretrained(adapter_dir)")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, adapter_name: str = "default",
                        is_trainable: bool = False, config: PeftConfig | None = None, **kwargs: Any) -> PeftModel:
        """``kwargs`` go to the base model's ``from_pretrained`` (dtype, num_labels, ...)."""
        from openformers.models import auto

        peft_config = config or PeftConfig.from_pretrained(pretrained_model_name_or_path)
        base = peft_config.base_model_name_or_path
        if not base:
            raise ValueError(
                f"{pretrained_model_name_or_path}/adapter_config.json has no base_model_name_or_path; load the base "
                "model yourself and call PeftModel.from_pretrained(model, adapter_dir)"
            )
        model = getattr(auto, cls._auto_class).from_pretrained(base, **kwargs)
        return cls._peft_class.from_pretrained(model, pretrained_model_name_or_path, adapter_name=adapter_name,
                                               is_trainable=is_trainable, config=peft_config)


class AutoPeftModel(_AutoPeftModel):
    _auto_class = "AutoModel"
    _peft_class = PeftModel


class AutoPeftModelForCausalLM(_AutoPeftModel):
    _auto_class = "AutoModelForCausalLM"
    _peft_class = PeftModelForCausalLM


class AutoPeftModelForSequenceClassification(_AutoPeftModel):
    _auto_class = "AutoModelForSequenceClassification"
    _peft_class = PeftModelForSequenceClassification


class AutoPeftModelForTokenClassification(_AutoPeftModel):
    _auto_class = "AutoModelForTokenClassification"
    _peft_class = PeftModelForTokenClassification


class AutoPeftModelForQuestionAnswering(_AutoPeftModel):
    _auto_class = "AutoModelForQuestionAnswering"
    _peft_class = PeftModelForQuestionAnswering


class AutoPeftModelForFeatureExtraction(_AutoPeftModel):
    _auto_class = "AutoModel"
    _peft_class = PeftModelForFeatureExtraction
