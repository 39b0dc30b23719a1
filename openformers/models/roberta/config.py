"""RoBERTa and XLM-RoBERTa configurations: BERT's fields with RoBERTa's special-token defaults."""
from __future__ import annotations

from typing import Any

from openformers.models.bert.config import BertConfig


class RobertaConfig(BertConfig):
    """Configuration of a RoBERTa encoder (defaults: ``roberta-base`` minus its 514 positions)."""

    model_type = "roberta"

    def __init__(
        self,
        vocab_size: int = 50265,
        pad_token_id: int | None = 1,
        bos_token_id: int | None = 0,
        eos_token_id: int | None = 2,
        **kwargs: Any,
    ) -> None:
        super().__init__(vocab_size=vocab_size, pad_token_id=pad_token_id, bos_token_id=bos_token_id,
                         eos_token_id=eos_token_id, **kwargs)


class XLMRobertaConfig(RobertaConfig):
    """XLM-RoBERTa: the RoBERTa architecture with its own model_type (and BERT's default vocab size)."""

    model_type = "xlm-roberta"

    def __init__(self, vocab_size: int = 30522, **kwargs: Any) -> None:
        super().__init__(vocab_size=vocab_size, **kwargs)
