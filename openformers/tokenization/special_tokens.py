"""Special-token bookkeeping shared by the tokenizer front-end: ``bos_token``, ``pad_token_id``, ..."""
from __future__ import annotations

from typing import Any

from tokenizers import AddedToken

SPECIAL_TOKENS_ATTRIBUTES = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"]


def as_added_token(value: Any, special: bool = True) -> AddedToken | str | None:
    """A token from a config file: a string, or a serialized AddedToken dict, or None."""
    if value is None or isinstance(value, (str, AddedToken)):
        return value
    if isinstance(value, dict) and "content" in value:
        return AddedToken(
            value["content"],
            single_word=value.get("single_word", False),
            lstrip=value.get("lstrip", False),
            rstrip=value.get("rstrip", False),
            normalized=value.get("normalized", not special),
            special=value.get("special", special),
        )
    raise TypeError(f"a special token must be a str, an AddedToken or an AddedToken dict, got {value!r}")


def added_token_dict(token: AddedToken | str, special: bool = True) -> dict[str, Any] | str:
    """Serialize an AddedToken like the Hugging Face config files do."""
    if isinstance(token, str):
        return token
    return {
        "content": token.content, "single_word": token.single_word, "lstrip": token.lstrip,
        "rstrip": token.rstrip, "normalized": token.normalized, "special": token.special,
    }


def _make_property(key: str) -> property:
    def getter(self: "SpecialTokensMixin") -> str | None:
        value = self._special_tokens.get(key)
        return None if value is None else str(value)

    def setter(self: "SpecialTokensMixin", value: Any) -> None:
        if value is not None and not isinstance(value, (str, AddedToken)):
            raise TypeError(f"{key} must be a str or AddedToken, got {type(value).__name__}")
        self._special_tokens[key] = value
        self._on_special_tokens_changed()

    def id_getter(self: "SpecialTokensMixin") -> int | None:
        value = self._special_tokens.get(key)
        return None if value is None else self.convert_tokens_to_ids(str(value))

    def id_setter(self: "SpecialTokensMixin", value: int | None) -> None:
        setattr(self, key, None if value is None else self.convert_ids_to_tokens(int(value)))

    return property(getter, setter, doc=f"The {key.replace('_', ' ')} (a str) or None."), property(
        id_getter, id_setter, doc=f"Id of the {key.replace('_', ' ')} or None."
    )


class SpecialTokensMixin:
    """Named special tokens (``bos_token`` ... ``mask_token``) plus ``additional_special_tokens``."""

    _special_tokens: dict[str, AddedToken | str | None]
    _extra_special_tokens: list[AddedToken | str]

    def convert_tokens_to_ids(self, tokens: Any) -> Any:  # implemented by the tokenizer
        raise NotImplementedError

    def convert_ids_to_tokens(self, ids: Any, skip_special_tokens: bool = False) -> Any:
        raise NotImplementedError

    def _on_special_tokens_changed(self) -> None:
        """Hook: register the tokens with the backend."""

    @property
    def additional_special_tokens(self) -> list[str]:
        """Extra special tokens beyond the named ones."""
        return [str(t) for t in self._extra_special_tokens]

    @additional_special_tokens.setter
    def additional_special_tokens(self, values: list[Any]) -> None:
        self._extra_special_tokens = [as_added_token(v) for v in values or []]
        self._on_special_tokens_changed()

    extra_special_tokens = additional_special_tokens

    @property
    def additional_special_tokens_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self.additional_special_tokens)

    @property
    def special_tokens_map(self) -> dict[str, str]:
        """Named special tokens as strings (only those that are set)."""
        out: dict[str, Any] = {k: str(v) for k, v in self._special_tokens.items() if v is not None}
        return out

    @property
    def special_tokens_map_extended(self) -> dict[str, Any]:
        """Like :attr:`special_tokens_map` but keeping AddedToken objects, plus additional tokens."""
        out: dict[str, Any] = {k: v for k, v in self._special_tokens.items() if v is not None}
        if self._extra_special_tokens:
            out["additional_special_tokens"] = list(self._extra_special_tokens)
        return out

    @property
    def all_special_tokens(self) -> list[str]:
        """Every special token string, named first then additional, without duplicates."""
        seen: list[str] = []
        for key in SPECIAL_TOKENS_ATTRIBUTES:
            value = self._special_tokens.get(key)
            if value is not None and str(value) not in seen:
                seen.append(str(value))
        for value in self._extra_special_tokens:
            if str(value) not in seen:
                seen.append(str(value))
        return seen

    @property
    def all_special_ids(self) -> list[int]:
        """Ids of :attr:`all_special_tokens`."""
        return self.convert_tokens_to_ids(self.all_special_tokens)

    @property
    def pad_token_type_id(self) -> int:
        return 0


for _key in SPECIAL_TOKENS_ATTRIBUTES:
    _tok, _id = _make_property(_key)
    setattr(SpecialTokensMixin, _key, _tok)
    setattr(SpecialTokensMixin, f"{_key}_id", _id)
