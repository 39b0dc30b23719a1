"""Adding special tokens to id sequences that were tokenized without them."""
from __future__ import annotations

from typing import Any


class SequenceBuildingMixin:
    """``build_inputs_with_special_tokens`` and friends, read off the backend's post-processor.

    The layout (where [CLS], [SEP], <s> ... go around the sequences) is found by post-processing
    a probe encoding and reading its ``sequence_ids``, so it follows whatever post-processor the
    tokenizer has (template, BERT, RoBERTa, byte-level, none).
    """

    _tokenizer: Any
    _lock: Any

    def _layout(self, pair: bool) -> list[tuple[str, int, int]]:
        """[("A"|"B"|"special", id, type_id), ...] for a single or pair input."""
        with self._lock:  # no call-time padding/truncation may leak into the probe
            probe = self._tokenizer.encode("a", "a" if pair else None, add_special_tokens=True)
        layout: list[tuple[str, int, int]] = []
        for tid, seq, type_id in zip(probe.ids, probe.sequence_ids, probe.type_ids):
            if seq is None:
                layout.append(("special", tid, type_id))
            else:
                slot = "A" if seq == 0 else "B"
                if not layout or layout[-1][0] != slot:
                    layout.append((slot, -1, type_id))
        return layout

    def build_inputs_with_special_tokens(self, token_ids_0: list[int], token_ids_1: list[int] | None = None) -> list[int]:
        """``token_ids_0`` (and ``token_ids_1``) with the special tokens the tokenizer adds."""
        out: list[int] = []
        for slot, tid, _ in self._layout(token_ids_1 is not None):
            out.extend([tid] if slot == "special" else token_ids_0 if slot == "A" else token_ids_1 or [])
        return out

    def create_token_type_ids_from_sequences(self, token_ids_0: list[int],
                                             token_ids_1: list[int] | None = None) -> list[int]:
        """Token type ids matching :meth:`build_inputs_with_special_tokens`."""
        out: list[int] = []
        for slot, _, type_id in self._layout(token_ids_1 is not None):
            n = 1 if slot == "special" else len(token_ids_0) if slot == "A" else len(token_ids_1 or [])
            out.extend([type_id] * n)
        return out

    def get_special_tokens_mask(self, token_ids_0: list[int], token_ids_1: list[int] | None = None,
                                already_has_special_tokens: bool = False) -> list[int]:
        """1 for special tokens, 0 for sequence tokens.

        With ``already_has_special_tokens=True`` the ids are checked against ``all_special_ids``;
        otherwise the mask describes :meth:`build_inputs_with_special_tokens`'s output.
        """
        if already_has_special_tokens:
            if token_ids_1 is not None:
                raise ValueError("give only token_ids_0 when the ids already hold their special tokens")
            special = set(self.all_special_ids)  # type: ignore[attr-defined]
            return [1 if int(t) in special else 0 for t in token_ids_0]
        out: list[int] = []
        for slot, _, _ in self._layout(token_ids_1 is not None):
            n = 1 if slot == "special" else len(token_ids_0) if slot == "A" else len(token_ids_1 or [])
            out.extend([1 if slot == "special" else 0] * n)
        return out
