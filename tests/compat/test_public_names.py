"""The public names users import from transformers, peft, datasets and evaluate -- those the seed
documents and the scripts in tests/compat/scripts use, and those users met missing -- import from
the matching openformers path. Add a name here when a user meets a gap."""
from __future__ import annotations

import importlib

import pytest

# reference module -> openformers module
PATHS = {
    "transformers": "openformers",
    "transformers.utils": "openformers.utils",
    "transformers.utils.logging": "openformers.utils.logging",
    "transformers.utils.versions": "openformers.utils.versions",
    "transformers.hf_argparser": "openformers.utils.argparser",
    "transformers.trainer_utils": "openformers.training",
    "transformers.optimization": "openformers.training.schedulers",
    "transformers.pipelines.pt_utils": "openformers.data",
    "transformers.models.auto": "openformers.models.mappings",
    "transformers.training_args": "openformers.training.arguments",
    "peft": "openformers.peft",
    "datasets": "openformers.data",
    "evaluate": "openformers.metrics",
}

NAMES = {
    "transformers": [
        # seed documents
        "AutoTokenizer", "AutoModel", "AutoModelForSequenceClassification", "AutoModelForCausalLM",
        "TrainingArguments", "Trainer", "pipeline", "BitsAndBytesConfig", "DataCollatorWithPadding",
        # the scripts and their gaps
        "AutoConfig", "AutoModelForTokenClassification", "AutoModelForQuestionAnswering", "AutoModelForMaskedLM",
        "PretrainedConfig", "PreTrainedConfig", "PreTrainedModel", "PreTrainedTokenizerFast", "BatchEncoding",
        "HfArgumentParser", "EvalPrediction", "set_seed", "get_scheduler", "get_linear_schedule_with_warmup",
        "get_cosine_schedule_with_warmup", "get_constant_schedule", "get_constant_schedule_with_warmup",
        "get_cosine_with_hard_restarts_schedule_with_warmup", "get_polynomial_decay_schedule_with_warmup",
        "get_inverse_sqrt_schedule", "get_wsd_schedule", "SchedulerType",
        "CONFIG_MAPPING", "MODEL_MAPPING", "MODEL_FOR_CAUSAL_LM_MAPPING", "MODEL_FOR_MASKED_LM_MAPPING",
        "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING", "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING",
        "MODEL_FOR_QUESTION_ANSWERING_MAPPING",
        "DataCollatorForLanguageModeling", "DataCollatorForTokenClassification", "DataCollatorForSeq2Seq",
        "default_data_collator", "TrainerCallback", "EarlyStoppingCallback", "GenerationConfig", "TextStreamer",
        "TextIteratorStreamer", "LogitsProcessorList", "StoppingCriteriaList",
        "BertTokenizer", "BertTokenizerFast", "GPT2Tokenizer", "GPT2TokenizerFast", "LlamaTokenizer",
        "LlamaTokenizerFast", "RobertaTokenizer", "RobertaTokenizerFast", "DistilBertTokenizer",
        "DistilBertTokenizerFast", "Qwen2Tokenizer", "Qwen2TokenizerFast", "XLMRobertaTokenizerFast",
        "BertConfig", "BertModel", "BertForSequenceClassification", "LlamaConfig", "LlamaForCausalLM",
        "GPT2LMHeadModel", "is_torch_available",
    ],
    "transformers.utils": ["logging", "check_min_version", "is_torch_available", "is_datasets_available",
                           "is_peft_available", "is_accelerate_available", "is_sentencepiece_available",
                           "is_tokenizers_available", "is_offline_mode"],
    "transformers.utils.logging": ["get_logger", "set_verbosity", "set_verbosity_info", "set_verbosity_warning",
                                   "set_verbosity_error", "set_verbosity_debug", "get_verbosity",
                                   "enable_default_handler", "disable_default_handler", "enable_explicit_format",
                                   "reset_format", "enable_propagation", "disable_propagation",
                                   "disable_progress_bar", "enable_progress_bar", "INFO", "WARNING"],
    "transformers.utils.versions": ["require_version"],
    "transformers.hf_argparser": ["HfArgumentParser"],
    "transformers.trainer_utils": ["EvalPrediction", "PredictionOutput", "TrainOutput"],
    "transformers.optimization": ["get_scheduler", "get_linear_schedule_with_warmup", "SchedulerType"],
    "transformers.pipelines.pt_utils": ["KeyDataset"],
    "transformers.models.auto": ["CONFIG_MAPPING", "CONFIG_MAPPING_NAMES", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
                                 "MODEL_FOR_MASKED_LM_MAPPING_NAMES", "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
                                 "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
                                 "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES", "MODEL_MAPPING_NAMES"],
    "transformers.training_args": ["TrainingArguments", "ParallelMode"],
    "peft": ["LoraConfig", "get_peft_model", "PeftModel", "PeftConfig", "TaskType", "PeftType",
             "PromptEncoderConfig", "PromptTuningConfig", "PrefixTuningConfig", "IA3Config", "get_peft_config",
             "prepare_model_for_kbit_training", "AutoPeftModelForCausalLM", "get_peft_model_state_dict",
             "set_peft_model_state_dict", "PeftModelForSequenceClassification", "PromptTuningInit",
             "LoHaConfig", "LoKrConfig", "AdaLoraConfig"],
    "datasets": ["load_dataset", "Dataset", "DatasetDict", "load_from_disk", "concatenate_datasets",
                 "interleave_datasets", "Features", "Value", "ClassLabel", "Sequence", "IterableDataset",
                 "disable_progress_bars", "enable_progress_bars", "load_metric"],
    "evaluate": ["load", "combine", "list_evaluation_modules"],
}

CASES = [(module, name) for module, names in NAMES.items() for name in names]


@pytest.mark.parametrize("module,name", CASES, ids=[f"{m}.{n}" for m, n in CASES])
def test_importable_from_matching_path(module, name):
    target = PATHS[module]
    assert hasattr(importlib.import_module(target), name), f"`from {module} import {name}`: openformers has no {target}.{name}"


def test_mappings_behave_like_the_reference():
    import transformers

    import openformers

    ours = {c.model_type for c in openformers.MODEL_FOR_CAUSAL_LM_MAPPING.keys()}
    theirs = {c.model_type for c in transformers.MODEL_FOR_CAUSAL_LM_MAPPING.keys()}
    assert ours <= theirs and {"llama", "gpt2", "qwen2", "mistral"} <= ours
    assert openformers.CONFIG_MAPPING["bert"]().model_type == "bert"
    assert openformers.MODEL_FOR_MASKED_LM_MAPPING_NAMES["bert"] == transformers.models.auto.modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES["bert"]
