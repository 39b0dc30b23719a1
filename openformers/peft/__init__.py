"""Parameter-efficient fine-tuning: LoRA (and DoRA), AdaLoRA, IA3, LoHa, LoKr, prompt tuning and prefix tuning.

Adapters are injected into the model's own modules and saved as ``adapter_config.json`` +
``adapter_model.safetensors`` in the peft package's layout, so adapters move both ways
between openformers and the Hugging Face stack.
"""
from openformers.peft.auto import (
    AutoPeftModel,
    AutoPeftModelForCausalLM,
    AutoPeftModelForFeatureExtraction,
    AutoPeftModelForQuestionAnswering,
    AutoPeftModelForSequenceClassification,
    AutoPeftModelForTokenClassification,
)
from openformers.peft.adalora import AdaLoraLinear, AdaLoraModel, RankAllocator
from openformers.peft.config import (
    AdaLoraConfig,
    IA3Config,
    LoHaConfig,
    LoKrConfig,
    LoraConfig,
    PeftConfig,
    PeftType,
    PEFT_TYPE_TO_CONFIG_MAPPING,
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptEncoderReparameterizationType,
    PromptTuningConfig,
    PromptTuningInit,
    TaskType,
    get_peft_config,
)
from openformers.peft.ia3 import IA3Linear
from openformers.peft.kbit import max_logit_change, prepare_model_for_kbit_training
from openformers.peft.lora import LoraEmbedding, LoraLinear
from openformers.peft.lycoris import LoHaLinear, LoKrLinear
from openformers.peft.model import (
    PeftModel,
    PeftModelForCausalLM,
    PeftModelForFeatureExtraction,
    PeftModelForQuestionAnswering,
    PeftModelForSequenceClassification,
    PeftModelForTokenClassification,
    get_peft_model,
)
from openformers.peft.save_and_load import get_peft_model_state_dict, set_peft_model_state_dict
from openformers.peft.tuners import IA3Model, LoHaModel, LoKrModel, LoraModel, ModulesToSaveWrapper

__all__ = [
    "AutoPeftModel", "AutoPeftModelForCausalLM", "AutoPeftModelForFeatureExtraction", "AutoPeftModelForQuestionAnswering",
    "AutoPeftModelForSequenceClassification", "AutoPeftModelForTokenClassification", "IA3Config", "IA3Linear",
    "IA3Model", "LoraConfig", "LoraEmbedding", "LoraLinear", "LoraModel", "ModulesToSaveWrapper", "PeftConfig",
    "PeftModel", "PeftModelForCausalLM", "PeftModelForFeatureExtraction", "PeftModelForQuestionAnswering",
    "PeftModelForSequenceClassification", "PeftModelForTokenClassification", "PeftType", "PrefixTuningConfig",
    "PromptTuningConfig", "PromptTuningInit", "TaskType", "get_peft_model", "get_peft_model_state_dict",
    "max_logit_change", "PEFT_TYPE_TO_CONFIG_MAPPING", "PromptEncoderConfig", "PromptEncoderReparameterizationType",
    "get_peft_config", "prepare_model_for_kbit_training", "set_peft_model_state_dict",
    "AdaLoraConfig", "AdaLoraLinear", "AdaLoraModel", "RankAllocator", "LoHaConfig", "LoHaLinear", "LoHaModel", "LoKrConfig", "LoKrLinear", "LoKrModel",
]
