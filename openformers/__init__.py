"""openformers: transformer models, tokenizers, pipelines, training and fine-tuning on PyTorch.

The public API is imported lazily (PEP 562): ``import openformers`` loads no torch and no
model code; a name is imported the first time it is used.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# what core/ calls but the layers above it provide (core imports nothing above it: core/extensions.py)
from openformers.core import extensions as _extensions  # noqa: E402

for _name, _module, _attribute in (
    ("generate", "openformers.generation.utils", "generate"),
    ("generation_config", "openformers.generation.config", "GenerationConfig"),
    ("read_gguf_model", "openformers.models.gguf_loading", "read_gguf_model"),
    ("config_class_for", "openformers.models.auto", "config_class_for"),
    ("resolve_quantization_config", "openformers.quantization", "resolve_quantization_config"),
    ("quantize_model", "openformers.quantization", "quantize_model"),
    ("inference_runner", "openformers.runtime.dispatch", "inference_runner"),
    ("training_runner", "openformers.runtime.dispatch", "training_runner"),
):
    _extensions.provide(_name, _module, _attribute)

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # core
    "PretrainedConfig": "openformers.core.config",
    "PreTrainedModel": "openformers.core.modeling",
    "ModelOutput": "openformers.core.outputs",
    "embedded_model_path": "openformers.core.hub",
    "set_seed": "openformers.core.seed",
    # auto classes
    "AutoConfig": "openformers.models.auto",
    "AutoModel": "openformers.models.auto",
    "AutoModelForSequenceClassification": "openformers.models.auto",
    "AutoModelForTokenClassification": "openformers.models.auto",
    "AutoModelForQuestionAnswering": "openformers.models.auto",
    "AutoModelForMaskedLM": "openformers.models.auto",
    "AutoModelForCausalLM": "openformers.models.auto",
    # tokenizers
    "AutoTokenizer": "openformers.tokenization.auto",
    "PreTrainedTokenizerFast": "openformers.tokenization.base",
    "BatchEncoding": "openformers.tokenization.base",
    # generation
    "GenerationConfig": "openformers.generation.config",
    "TextStreamer": "openformers.generation.streamers",
    "TextIteratorStreamer": "openformers.generation.streamers",
    "LogitsProcessor": "openformers.generation",
    "LogitsProcessorList": "openformers.generation",
    "TemperatureLogitsWarper": "openformers.generation",
    "TopKLogitsWarper": "openformers.generation",
    "TopPLogitsWarper": "openformers.generation",
    "MinPLogitsWarper": "openformers.generation",
    "TypicalLogitsWarper": "openformers.generation",
    "RepetitionPenaltyLogitsProcessor": "openformers.generation",
    "NoRepeatNGramLogitsProcessor": "openformers.generation",
    "NoBadWordsLogitsProcessor": "openformers.generation",
    "MinLengthLogitsProcessor": "openformers.generation",
    "MinNewTokensLengthLogitsProcessor": "openformers.generation",
    "StoppingCriteria": "openformers.generation",
    "StoppingCriteriaList": "openformers.generation",
    "MaxLengthCriteria": "openformers.generation",
    "EosTokenCriteria": "openformers.generation",
    "StopStringCriteria": "openformers.generation",
    "DynamicCache": "openformers.generation",
    "StaticCache": "openformers.generation",
    # pipelines
    "pipeline": "openformers.pipelines",
    # data
    "Dataset": "openformers.data",
    "DatasetDict": "openformers.data",
    "load_dataset": "openformers.data",
    "load_from_disk": "openformers.data",
    "concatenate_datasets": "openformers.data",
    "interleave_datasets": "openformers.data",
    # training
    "TrainingArguments": "openformers.training",
    "Trainer": "openformers.training",
    "TrainerCallback": "openformers.training",
    "EarlyStoppingCallback": "openformers.training",
    "DataCollatorWithPadding": "openformers.data.collators",
    "DataCollatorForLanguageModeling": "openformers.data.collators",
    "DataCollatorForTokenClassification": "openformers.data.collators",
    "DataCollatorForSeq2Seq": "openformers.data.collators",
    "DataCollatorWithFlattening": "openformers.data.collators",
    "default_data_collator": "openformers.data.collators",
    # peft / quantization
    "LoraConfig": "openformers.peft",
    "get_peft_model": "openformers.peft",
    "PeftModel": "openformers.peft",
    "BitsAndBytesConfig": "openformers.quantization",
    "GGUFQuantizationConfig": "openformers.quantization",
    # sharing
    "ModelCard": "openformers.hub.card",
    # names scripts import from the reference packages' top level
    "PreTrainedConfig": "openformers.core.config",
    "HfArgumentParser": "openformers.utils.argparser",
    "EvalPrediction": "openformers.training",
    "SchedulerType": "openformers.training",
    "get_scheduler": "openformers.training",
    "get_constant_schedule": "openformers.training",
    "get_constant_schedule_with_warmup": "openformers.training",
    "get_linear_schedule_with_warmup": "openformers.training",
    "get_cosine_schedule_with_warmup": "openformers.training",
    "get_cosine_with_hard_restarts_schedule_with_warmup": "openformers.training",
    "get_polynomial_decay_schedule_with_warmup": "openformers.training",
    "get_inverse_sqrt_schedule": "openformers.training",
    "get_wsd_schedule": "openformers.training",
    "disable_progress_bars": "openformers.utils.progress",
    "enable_progress_bars": "openformers.utils.progress",
    "is_torch_available": "openformers.utils.import_utils",
    "PromptEncoderConfig": "openformers.peft",
    "PromptTuningConfig": "openformers.peft",
    "PrefixTuningConfig": "openformers.peft",
    "IA3Config": "openformers.peft",
    "LoHaConfig": "openformers.peft",
    "LoKrConfig": "openformers.peft",
    "AdaLoraConfig": "openformers.peft",
    "TaskType": "openformers.peft",
    "get_peft_config": "openformers.peft",
    "prepare_model_for_kbit_training": "openformers.peft",
}
for _name in ("CONFIG_MAPPING", "CONFIG_MAPPING_NAMES", "MODEL_MAPPING", "MODEL_MAPPING_NAMES",
              "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING", "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
              "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING", "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
              "MODEL_FOR_QUESTION_ANSWERING_MAPPING", "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES",
              "MODEL_FOR_MASKED_LM_MAPPING", "MODEL_FOR_MASKED_LM_MAPPING_NAMES",
              "MODEL_FOR_CAUSAL_LM_MAPPING", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"):
    _EXPORTS[_name] = "openformers.models.mappings"
for _name in ("BertTokenizer", "DistilBertTokenizer", "ElectraTokenizer", "GPT2Tokenizer", "RobertaTokenizer",
              "Qwen2Tokenizer", "LlamaTokenizer", "CodeLlamaTokenizer", "XLMRobertaTokenizer", "GemmaTokenizer"):
    _EXPORTS[_name] = _EXPORTS[_name + "Fast"] = "openformers.tokenization.families"

# model classes are exported from their family modules
_MODEL_FAMILIES: dict[str, list[str]] = {
    "openformers.models.bert": [
        "BertConfig", "BertModel", "BertForSequenceClassification", "BertForTokenClassification",
        "BertForQuestionAnswering", "BertForMaskedLM",
    ],
    "openformers.models.roberta": [
        "RobertaConfig", "RobertaModel", "RobertaForSequenceClassification",
        "RobertaForTokenClassification", "RobertaForQuestionAnswering", "RobertaForMaskedLM",
        "XLMRobertaConfig", "XLMRobertaModel", "XLMRobertaForSequenceClassification",
        "XLMRobertaForTokenClassification", "XLMRobertaForQuestionAnswering", "XLMRobertaForMaskedLM",
    ],
    "openformers.models.distilbert": [
        "DistilBertConfig", "DistilBertModel", "DistilBertForSequenceClassification",
        "DistilBertForTokenClassification", "DistilBertForQuestionAnswering", "DistilBertForMaskedLM",
    ],
    "openformers.models.gpt2": [
        "GPT2Config", "GPT2Model", "GPT2LMHeadModel", "GPT2ForSequenceClassification",
        "GPT2ForTokenClassification", "GPT2ForQuestionAnswering",
    ],
    "openformers.models.llama": [
        "LlamaConfig", "LlamaModel", "LlamaForCausalLM", "LlamaForSequenceClassification",
        "LlamaForTokenClassification", "LlamaForQuestionAnswering",
        "MistralConfig", "MistralModel", "MistralForCausalLM", "MistralForSequenceClassification",
        "MistralForTokenClassification", "MistralForQuestionAnswering",
        "Qwen2Config", "Qwen2Model", "Qwen2ForCausalLM", "Qwen2ForSequenceClassification",
        "Qwen2ForTokenClassification", "Qwen2ForQuestionAnswering",
        "Qwen3Config", "Qwen3Model", "Qwen3ForCausalLM", "Qwen3ForSequenceClassification",
        "Qwen3ForTokenClassification", "Qwen3ForQuestionAnswering",
        "GemmaConfig", "GemmaModel", "GemmaForCausalLM", "GemmaForSequenceClassification",
        "GemmaForTokenClassification",
        "Starcoder2Config", "Starcoder2Model", "Starcoder2ForCausalLM", "Starcoder2ForSequenceClassification",
        "Starcoder2ForTokenClassification",
    ],
}
for _module, _names in _MODEL_FAMILIES.items():
    for _name in _names:
        _EXPORTS[_name] = _module

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'openformers' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return __all__
