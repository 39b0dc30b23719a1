"""The Llama family: Llama (and SmolLM2), Mistral, Qwen2, Qwen3, Gemma and Starcoder2."""
from openformers.models.llama.gemma import (
    GemmaConfig,
    GemmaForCausalLM,
    GemmaForSequenceClassification,
    GemmaForTokenClassification,
    GemmaModel,
)
from openformers.models.llama.config import LlamaConfig
from openformers.models.llama.mistral import (
    MistralConfig,
    MistralForCausalLM,
    MistralForQuestionAnswering,
    MistralForSequenceClassification,
    MistralForTokenClassification,
    MistralModel,
)
from openformers.models.llama.heads import (
    LlamaForQuestionAnswering,
    LlamaForSequenceClassification,
    LlamaForTokenClassification,
)
from openformers.models.llama.model import LlamaForCausalLM, LlamaModel, LlamaPreTrainedModel
from openformers.models.llama.qwen2 import (
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2ForQuestionAnswering,
    Qwen2ForSequenceClassification,
    Qwen2ForTokenClassification,
    Qwen2Model,
)
from openformers.models.llama.starcoder2 import (
    Starcoder2Config,
    Starcoder2ForCausalLM,
    Starcoder2ForSequenceClassification,
    Starcoder2ForTokenClassification,
    Starcoder2Model,
)
from openformers.models.llama.qwen3 import (
    Qwen3Config,
    Qwen3ForCausalLM,
    Qwen3ForQuestionAnswering,
    Qwen3ForSequenceClassification,
    Qwen3ForTokenClassification,
    Qwen3Model,
)

__all__ = [
    "LlamaConfig", "LlamaModel", "LlamaPreTrainedModel", "LlamaForCausalLM", "LlamaForSequenceClassification",
    "LlamaForTokenClassification", "LlamaForQuestionAnswering",
    "MistralConfig", "MistralModel", "MistralForCausalLM", "MistralForSequenceClassification",
    "MistralForTokenClassification", "MistralForQuestionAnswering",
    "Qwen2Config", "Qwen2Model", "Qwen2ForCausalLM", "Qwen2ForSequenceClassification",
    "Qwen2ForTokenClassification", "Qwen2ForQuestionAnswering",
    "Qwen3Config", "Qwen3Model", "Qwen3ForCausalLM", "Qwen3ForSequenceClassification",
    "Qwen3ForTokenClassification", "Qwen3ForQuestionAnswering",
    "GemmaConfig", "GemmaModel", "GemmaForCausalLM", "GemmaForSequenceClassification", "GemmaForTokenClassification",
    "Starcoder2Config", "Starcoder2Model", "Starcoder2ForCausalLM", "Starcoder2ForSequenceClassification",
    "Starcoder2ForTokenClassification",
]
