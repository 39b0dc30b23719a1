"""Text generation: ``GenerationConfig``, logits processors and warpers, stopping criteria, streamers
and ``generate`` (greedy, sampling, beam search) for any causal LM."""
from openformers.generation.beam_search import beam_search
from openformers.generation.config import GenerationConfig
from openformers.generation.logits_process import (
    EpsilonLogitsWarper,
    EtaLogitsWarper,
    ExponentialDecayLengthPenalty,
    ForcedBOSTokenLogitsProcessor,
    ForcedEOSTokenLogitsProcessor,
    InfNanRemoveLogitsProcessor,
    LogitNormalization,
    LogitsProcessor,
    LogitsProcessorList,
    LogitsWarper,
    MinLengthLogitsProcessor,
    MinNewTokensLengthLogitsProcessor,
    MinPLogitsWarper,
    NoBadWordsLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    PrefixConstrainedLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    SequenceBiasLogitsProcessor,
    SuppressTokensAtBeginLogitsProcessor,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)
from openformers.generation.stopping_criteria import (
    EosTokenCriteria,
    MaxLengthCriteria,
    MaxTimeCriteria,
    StoppingCriteria,
    StoppingCriteriaList,
    StopStringCriteria,
)
from openformers.generation.streamers import BaseStreamer, TextIteratorStreamer, TextStreamer
from openformers.generation.utils import (
    BeamSearchDecoderOnlyOutput,
    GenerateBeamDecoderOnlyOutput,
    GenerateDecoderOnlyOutput,
    GreedySearchDecoderOnlyOutput,
    SampleDecoderOnlyOutput,
    compute_transition_scores,
    generate,
)
from openformers.modules.cache import DynamicCache, StaticCache

__all__ = [
    "GenerationConfig", "generate", "beam_search", "compute_transition_scores",
    "LogitsProcessor", "LogitsWarper", "LogitsProcessorList",
    "TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper", "MinPLogitsWarper", "TypicalLogitsWarper",
    "EpsilonLogitsWarper", "EtaLogitsWarper",
    "RepetitionPenaltyLogitsProcessor", "NoRepeatNGramLogitsProcessor", "NoBadWordsLogitsProcessor",
    "SequenceBiasLogitsProcessor", "MinLengthLogitsProcessor", "MinNewTokensLengthLogitsProcessor",
    "ForcedBOSTokenLogitsProcessor", "ForcedEOSTokenLogitsProcessor", "SuppressTokensLogitsProcessor",
    "SuppressTokensAtBeginLogitsProcessor", "ExponentialDecayLengthPenalty", "InfNanRemoveLogitsProcessor",
    "LogitNormalization", "PrefixConstrainedLogitsProcessor",
    "StoppingCriteria", "StoppingCriteriaList", "MaxLengthCriteria", "MaxTimeCriteria", "EosTokenCriteria",
    "StopStringCriteria",
    "BaseStreamer", "TextStreamer", "TextIteratorStreamer",
    "GenerateDecoderOnlyOutput", "GenerateBeamDecoderOnlyOutput", "GreedySearchDecoderOnlyOutput",
    "SampleDecoderOnlyOutput", "BeamSearchDecoderOnlyOutput",
    "DynamicCache", "StaticCache",
]
