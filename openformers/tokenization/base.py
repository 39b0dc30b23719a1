"""PreTrainedTokenizerFast: the Hugging Face tokenizer API over a ``tokenizers.Tokenizer``."""
from __future__ import annotations

import copy
import json
import os
import threading
from pathlib import Path
from typing import Any, Sequence

from tokenizers import AddedToken, Tokenizer, processors

from .batch_encoding import BatchEncoding, CharSpan, TokenSpan  # noqa: F401  (re-exported)
from .padding import pad_features, resolve_strategies
from .sequence_building import SequenceBuildingMixin
from .special_tokens import SPECIAL_TOKENS_ATTRIBUTES, SpecialTokensMixin, added_token_dict, as_added_token

VERY_LARGE_INTEGER = int(1e30)  # model_max_length when the checkpoint sets none
_CLEANUPS = [(" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
             (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")]


def _to_list(ids: Any) -> Any:
    return ids.tolist() if hasattr(ids, "tolist") else ids


class PreTrainedTokenizerFast(SpecialTokensMixin, SequenceBuildingMixin):
    """A tokenizer backed by a ``tokenizers.Tokenizer`` with the Hugging Face call signature.

    Build it with :meth:`from_pretrained` (or ``AutoTokenizer.from_pretrained``), or directly from
    ``tokenizer_object=`` / ``tokenizer_file=`` plus the usual keyword settings
    (``model_max_length``, ``padding_side``, ``bos_token`` ..., ``chat_template``).
    """

    model_input_names: list[str] = ["input_ids", "attention_mask"]
    padding_side: str = "right"
    truncation_side: str = "right"

    def __init__(self, tokenizer_object: Tokenizer | None = None, tokenizer_file: str | os.PathLike | None = None,
                 *, _backend: Tokenizer | None = None, **kwargs: Any) -> None:
        if _backend is not None:  # a freshly built backend owned by the loader: no copy needed
            self._tokenizer = _backend
        elif tokenizer_object is not None:
            self._tokenizer = copy.deepcopy(tokenizer_object)
        elif tokenizer_file is not None:
            from .loading import read_tokenizer_json

            self._tokenizer = read_tokenizer_json(Path(tokenizer_file))
        else:
            raise ValueError("PreTrainedTokenizerFast needs tokenizer_object= (a tokenizers.Tokenizer) or "
                             "tokenizer_file= (a tokenizer.json path); or use AutoTokenizer.from_pretrained(dir)")
        baked = self._tokenizer.padding  # padding stored in tokenizer.json gives defaults only
        if baked:
            kwargs.setdefault("pad_token", baked.get("pad_token"))
            kwargs.setdefault("padding_side", baked.get("direction", "right"))
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        # padding/truncation are set on the shared backend for the duration of one call
        self._lock = threading.RLock()
        self.init_kwargs = {k: v for k, v in kwargs.items() if k not in ("added_tokens_decoder",)}
        self.name_or_path = str(kwargs.pop("name_or_path", ""))
        max_len = kwargs.pop("model_max_length", None)
        self.model_max_length = int(max_len) if max_len is not None else VERY_LARGE_INTEGER
        self.padding_side = kwargs.pop("padding_side", type(self).padding_side)
        self.truncation_side = kwargs.pop("truncation_side", type(self).truncation_side)
        for name, side in (("padding_side", self.padding_side), ("truncation_side", self.truncation_side)):
            if side not in ("left", "right"):
                raise ValueError(f"{name} must be 'left' or 'right', got {side!r}")
        self.model_input_names = list(kwargs.pop("model_input_names", type(self).model_input_names))
        self.clean_up_tokenization_spaces = bool(kwargs.pop("clean_up_tokenization_spaces", False))
        self.split_special_tokens = bool(kwargs.pop("split_special_tokens", False))
        self.chat_template = kwargs.pop("chat_template", None)
        if isinstance(self.chat_template, list):  # [{"name": ..., "template": ...}, ...]
            self.chat_template = {t["name"]: t["template"] for t in self.chat_template}
        self._special_tokens = {k: as_added_token(kwargs.pop(k, None)) for k in SPECIAL_TOKENS_ATTRIBUTES}
        extra = kwargs.pop("additional_special_tokens", None) or kwargs.pop("extra_special_tokens", None) or []
        if isinstance(extra, dict):  # v5 named extras {"image_token": "<image>"}
            extra = list(extra.values())
        self._extra_special_tokens = [as_added_token(t) for t in extra]
        explicit_bos_eos = "add_bos_token" in kwargs or "add_eos_token" in kwargs
        self._add_bos_token = bool(kwargs.pop("add_bos_token", False))
        self._add_eos_token = bool(kwargs.pop("add_eos_token", False))
        self._ready = False
        self._register_added_tokens(kwargs.pop("added_tokens_decoder", None) or {})
        self._ready = True
        self._on_special_tokens_changed()
        if explicit_bos_eos or self._tokenizer.post_processor is None:
            self.update_post_processor()
        self._tokenizer.encode_special_tokens = self.split_special_tokens

    # construction helpers -------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *init_inputs: Any,
                        **kwargs: Any) -> "PreTrainedTokenizerFast":
        """Load from a local directory, the Hugging Face cache, or an embedded model name."""
        from .loading import load_tokenizer

        return load_tokenizer(pretrained_model_name_or_path, tokenizer_cls=cls, **kwargs)

    def _register_added_tokens(self, added_tokens_decoder: dict[Any, Any]) -> None:
        # tokens from tokenizer_config.json's added_tokens_decoder, in id order
        existing = {t.content for t in self._tokenizer.get_added_tokens_decoder().values()}
        for _, value in sorted(((int(k), v) for k, v in added_tokens_decoder.items()), key=lambda kv: kv[0]):
            token = as_added_token(value, special=bool(value.get("special", False)) if isinstance(value, dict) else False)
            token = token if isinstance(token, AddedToken) else AddedToken(token, special=False)
            if token.content not in existing:
                self._tokenizer.add_tokens([token])
                existing.add(token.content)

    def _on_special_tokens_changed(self) -> None:
        if not getattr(self, "_ready", False):
            return
        existing = {t.content for t in self._tokenizer.get_added_tokens_decoder().values()}
        new = []
        for value in list(self._special_tokens.values()) + list(self._extra_special_tokens):
            if value is None or str(value) in existing:
                continue
            token = value if isinstance(value, AddedToken) else AddedToken(value, special=True, normalized=False)
            token.special = True
            new.append(token)
            existing.add(token.content)
        if new:
            self._tokenizer.add_special_tokens(new)

    def update_post_processor(self) -> None:
        """Rebuild the post-processor from ``add_bos_token`` / ``add_eos_token``."""
        bos, eos = self.bos_token, self.eos_token
        add_bos = self._add_bos_token and bos is not None
        add_eos = self._add_eos_token and eos is not None
        single = f"{bos + ':0 ' if add_bos else ''}$A:0{' ' + eos + ':0' if add_eos else ''}"
        pair = f"{single}{' ' + bos + ':1' if add_bos else ''} $B:1{' ' + eos + ':1' if add_eos else ''}"
        specials = []
        if add_bos:
            specials.append((bos, self.bos_token_id))
        if add_eos:
            specials.append((eos, self.eos_token_id))
        self._tokenizer.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)

    @property
    def add_bos_token(self) -> bool:
        return self._add_bos_token

    @add_bos_token.setter
    def add_bos_token(self, value: bool) -> None:
        self._add_bos_token = bool(value)
        self.update_post_processor()

    @property
    def add_eos_token(self) -> bool:
        return self._add_eos_token

    @add_eos_token.setter
    def add_eos_token(self, value: bool) -> None:
        self._add_eos_token = bool(value)
        self.update_post_processor()

    # vocabulary -----------------------------------------------------------------------------
    @property
    def backend_tokenizer(self) -> Tokenizer:
        """The underlying ``tokenizers.Tokenizer``."""
        return self._tokenizer

    @property
    def is_fast(self) -> bool:
        return True

    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary (without added tokens)."""
        return self._tokenizer.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        """Token -> id, added tokens included."""
        return self._tokenizer.get_vocab(with_added_tokens=True)

    @property
    def vocab(self) -> dict[str, int]:
        return self.get_vocab()

    @property
    def added_tokens_decoder(self) -> dict[int, AddedToken]:
        return dict(sorted(self._tokenizer.get_added_tokens_decoder().items()))

    @property
    def added_tokens_encoder(self) -> dict[str, int]:
        return {t.content: i for i, t in self.added_tokens_decoder.items()}

    def get_added_vocab(self) -> dict[str, int]:
        return self.added_tokens_encoder

    def convert_tokens_to_ids(self, tokens: str | Sequence[str] | None) -> int | list[int] | None:
        """Token(s) to id(s); unknown tokens map to ``unk_token_id``."""
        if tokens is None:
            return None
        if isinstance(tokens, str):
            index = self._tokenizer.token_to_id(tokens)
            if index is None:
                unk = self._special_tokens.get("unk_token")
                return self._tokenizer.token_to_id(str(unk)) if unk is not None else None
            return index
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | Sequence[int], skip_special_tokens: bool = False) -> str | list[str]:
        """Id(s) to token string(s)."""
        ids = _to_list(ids)
        if isinstance(ids, int):
            return self._tokenizer.id_to_token(ids)
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._tokenizer.id_to_token(int(i)) for i in ids if int(i) not in skip]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        decoder = self._tokenizer.decoder
        return decoder.decode(tokens) if decoder is not None else " ".join(tokens)

    def add_tokens(self, new_tokens: str | AddedToken | Sequence[str | AddedToken], special_tokens: bool = False) -> int:
        """Add tokens to the vocabulary; returns how many were new to it."""
        if not new_tokens:
            return 0
        if isinstance(new_tokens, (str, AddedToken)):
            new_tokens = [new_tokens]
        for t in new_tokens:
            if not isinstance(t, (str, AddedToken)):
                raise TypeError(f"add_tokens takes str or AddedToken values, got {type(t).__name__}")
        before = len(self)
        if special_tokens:
            self._tokenizer.add_special_tokens(list(new_tokens))
        else:
            self._tokenizer.add_tokens(list(new_tokens))
        return len(self) - before

    def add_special_tokens(self, special_tokens_dict: dict[str, Any],
                           replace_additional_special_tokens: bool = True) -> int:
        """Set named special tokens (``{"pad_token": "[PAD]"}``) and add them to the vocabulary.

        Returns the number of tokens that were new to the vocabulary.
        """
        before = len(self)
        self._ready = False
        try:
            for key, value in special_tokens_dict.items():
                if key in ("additional_special_tokens", "extra_special_tokens"):
                    if not isinstance(value, (list, tuple)):
                        raise TypeError(f"{key} must be a list of tokens, got {type(value).__name__}")
                    tokens = [as_added_token(v) for v in value]
                    if replace_additional_special_tokens:
                        self._extra_special_tokens = tokens
                    else:
                        self._extra_special_tokens += [t for t in tokens if str(t) not in self.additional_special_tokens]
                elif key in SPECIAL_TOKENS_ATTRIBUTES:
                    self._special_tokens[key] = as_added_token(value)
                else:
                    raise ValueError(f"add_special_tokens: unknown key {key!r}; expected one of "
                                     f"{SPECIAL_TOKENS_ATTRIBUTES + ['additional_special_tokens']}")
        finally:
            self._ready = True
        self._on_special_tokens_changed()
        return len(self) - before

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return self._tokenizer.num_special_tokens_to_add(pair)

    # encoding -------------------------------------------------------------------------------
    def __call__(self, text: Any = None, text_pair: Any = None, text_target: Any = None,
                 text_pair_target: Any = None, *, add_special_tokens: bool = True, padding: bool | str = False,
                 truncation: bool | str | None = None, max_length: int | None = None, stride: int = 0,
                 is_split_into_words: bool = False, pad_to_multiple_of: int | None = None,
                 padding_side: str | None = None, return_tensors: str | None = None,
                 return_token_type_ids: bool | None = None, return_attention_mask: bool | None = None,
                 return_overflowing_tokens: bool = False, return_special_tokens_mask: bool = False,
                 return_offsets_mapping: bool = False, return_length: bool = False, verbose: bool = True,
                 split_special_tokens: bool | None = None, **kwargs: Any) -> BatchEncoding:
        """Tokenize one text, a pair, or a batch of either. Returns a :class:`BatchEncoding`."""
        if kwargs:
            raise TypeError(f"unexpected keyword argument(s) for the tokenizer call: {sorted(kwargs)}")
        if text is None and text_target is None:
            raise ValueError("give text= (or text_target=) to tokenize")
        common = dict(add_special_tokens=add_special_tokens, padding=padding, truncation=truncation,
                      max_length=max_length, stride=stride, is_split_into_words=is_split_into_words,
                      pad_to_multiple_of=pad_to_multiple_of, padding_side=padding_side,
                      return_tensors=return_tensors, return_token_type_ids=return_token_type_ids,
                      return_attention_mask=return_attention_mask,
                      return_overflowing_tokens=return_overflowing_tokens,
                      return_special_tokens_mask=return_special_tokens_mask,
                      return_offsets_mapping=return_offsets_mapping, return_length=return_length,
                      split_special_tokens=split_special_tokens)
        encoded = self._encode(text, text_pair, **common) if text is not None else None
        if text_target is None:
            return encoded
        target = self._encode(text_target, text_pair_target, **common)
        if encoded is None:
            return target
        encoded["labels"] = target["input_ids"]
        return encoded

    def _encode(self, text: Any, text_pair: Any, *, add_special_tokens: bool, padding: Any, truncation: Any,
                max_length: int | None, stride: int, is_split_into_words: bool, pad_to_multiple_of: int | None,
                padding_side: str | None, return_tensors: str | None, return_token_type_ids: bool | None,
                return_attention_mask: bool | None, return_overflowing_tokens: bool,
                return_special_tokens_mask: bool, return_offsets_mapping: bool, return_length: bool,
                split_special_tokens: bool | None) -> BatchEncoding:
        _check_text(text, "text", is_split_into_words)
        if text_pair is not None:
            _check_text(text_pair, "text_pair", is_split_into_words)
        if is_split_into_words:
            batched = isinstance(text, (list, tuple)) and bool(text) and isinstance(text[0], (list, tuple))
        else:
            batched = isinstance(text, (list, tuple))
        if batched:
            if isinstance(text_pair, str):
                raise TypeError("when text is a batch (a list), text_pair must be a list of the same length")
            if text_pair is not None and len(text) != len(text_pair):
                raise ValueError(f"batch length of text ({len(text)}) and text_pair ({len(text_pair)}) differ")
            inputs = list(zip(text, text_pair)) if text_pair is not None else list(text)
        else:
            inputs = [(text, text_pair)] if text_pair else [text]
        pad_strategy, trunc_strategy, max_length = resolve_strategies(
            padding, truncation, max_length, self.model_max_length, pad_to_multiple_of)
        if pad_strategy != "do_not_pad" and self.pad_token is None:
            raise ValueError("padding was requested but the tokenizer has no pad token; set one with "
                             "tokenizer.pad_token = tokenizer.eos_token or "
                             "tokenizer.add_special_tokens({'pad_token': '[PAD]'})")
        side = padding_side or self.padding_side
        if side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {side!r}")
        split = self.split_special_tokens if split_special_tokens is None else split_special_tokens
        with self._lock:
            encodings = self._run_backend(inputs, add_special_tokens, is_split_into_words, pad_strategy,
                                          trunc_strategy, max_length, stride, side, pad_to_multiple_of, split)
        return self._to_batch_encoding(encodings, batched, return_tensors, return_token_type_ids,
                                       return_attention_mask, return_overflowing_tokens,
                                       return_special_tokens_mask, return_offsets_mapping, return_length)

    def _run_backend(self, inputs: list[Any], add_special_tokens: bool, is_split_into_words: bool, pad_strategy: str,
                     trunc_strategy: str, max_length: int | None, stride: int, side: str,
                     pad_to_multiple_of: int | None, split: bool) -> list[Any]:
        backend = self._tokenizer
        try:
            if trunc_strategy != "do_not_truncate":
                backend.enable_truncation(max_length, stride=stride, strategy=trunc_strategy,
                                          direction=self.truncation_side)
            if pad_strategy != "do_not_pad":
                backend.enable_padding(
                    direction=side, pad_id=self.pad_token_id, pad_type_id=self.pad_token_type_id,
                    pad_token=self.pad_token, length=max_length if pad_strategy == "max_length" else None,
                    pad_to_multiple_of=pad_to_multiple_of)
            backend.encode_special_tokens = split
            encodings = backend.encode_batch(inputs, add_special_tokens=add_special_tokens,
                                             is_pretokenized=is_split_into_words)
        except Exception as exc:
            if type(exc).__name__ == "Exception":  # errors raised by the Rust engine
                raise ValueError(f"tokenization failed: {exc}") from exc
            raise
        finally:
            backend.no_truncation()
            backend.no_padding()
            backend.encode_special_tokens = self.split_special_tokens
        return encodings

    def _to_batch_encoding(self, encodings: list[Any], batched: bool, return_tensors: str | None,
                           return_token_type_ids: bool | None, return_attention_mask: bool | None,
                           return_overflowing_tokens: bool, return_special_tokens_mask: bool,
                           return_offsets_mapping: bool, return_length: bool) -> BatchEncoding:
        want_types = "token_type_ids" in self.model_input_names if return_token_type_ids is None else return_token_type_ids
        want_mask = "attention_mask" in self.model_input_names if return_attention_mask is None else return_attention_mask
        data: dict[str, list[Any]] = {"input_ids": []}
        if want_types:
            data["token_type_ids"] = []
        if want_mask:
            data["attention_mask"] = []
        if return_special_tokens_mask:
            data["special_tokens_mask"] = []
        if return_offsets_mapping:
            data["offset_mapping"] = []
        if return_length:
            data["length"] = []
        flat, mapping = [], []
        for i, enc in enumerate(encodings):
            group = [enc] + (list(enc.overflowing) if return_overflowing_tokens else [])
            for e in group:
                flat.append(e)
                mapping.append(i)
                data["input_ids"].append(e.ids)
                if want_types:
                    data["token_type_ids"].append(e.type_ids)
                if want_mask:
                    data["attention_mask"].append(e.attention_mask)
                if return_special_tokens_mask:
                    data["special_tokens_mask"].append(e.special_tokens_mask)
                if return_offsets_mapping:
                    data["offset_mapping"].append(e.offsets)
                if return_length:
                    data["length"].append(len(e.ids))
        if return_overflowing_tokens:
            data["overflow_to_sample_mapping"] = mapping
        if not batched and return_tensors is None and not return_overflowing_tokens:
            # like the Hugging Face API: only per-token lists lose the batch axis ("length" stays [n])
            data = {k: v[0] if v and isinstance(v[0], list) else v for k, v in data.items()}
        return BatchEncoding(data, flat, tensor_type=return_tensors)

    def encode(self, text: Any, text_pair: Any = None, add_special_tokens: bool = True, padding: bool | str = False,
               truncation: bool | str | None = None, max_length: int | None = None, stride: int = 0,
               padding_side: str | None = None, return_tensors: str | None = None, **kwargs: Any) -> Any:
        """Token ids of one text (or pair); a tensor when ``return_tensors`` is set."""
        out = self(text, text_pair, add_special_tokens=add_special_tokens, padding=padding, truncation=truncation,
                   max_length=max_length, stride=stride, padding_side=padding_side, return_tensors=return_tensors,
                   **kwargs)
        return out["input_ids"]

    def tokenize(self, text: str, pair: str | None = None, add_special_tokens: bool = False, **kwargs: Any) -> list[str]:
        """Token strings of ``text`` (no special tokens unless asked)."""
        return self(text, pair, add_special_tokens=add_special_tokens, **kwargs).tokens()

    def pad(self, encoded_inputs: Any, padding: bool | str = True, max_length: int | None = None,
            pad_to_multiple_of: int | None = None, padding_side: str | None = None,
            return_attention_mask: bool | None = None, return_tensors: str | None = None,
            verbose: bool = True) -> BatchEncoding:
        """Pad already-encoded features (a dict of lists or a list of dicts), as data collators do."""
        return pad_features(self, encoded_inputs, padding=padding, max_length=max_length,
                            pad_to_multiple_of=pad_to_multiple_of, padding_side=padding_side,
                            return_attention_mask=return_attention_mask, return_tensors=return_tensors)

    # decoding -------------------------------------------------------------------------------
    def decode(self, token_ids: Any, skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: bool | None = None, **kwargs: Any) -> str | list[str]:
        """Text of ``token_ids`` (an int, a list, a tensor); a batch gives a list of texts."""
        ids = _to_list(token_ids)
        if isinstance(ids, dict):
            ids = ids["input_ids"]
        if isinstance(ids, int):
            ids = [ids]
        if ids and isinstance(ids[0], (list, tuple)):
            return self.batch_decode(ids, skip_special_tokens, clean_up_tokenization_spaces)
        text = self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)
        clean = self.clean_up_tokenization_spaces if clean_up_tokenization_spaces is None else clean_up_tokenization_spaces
        # the clean-up was designed for WordPiece; on BPE it deletes real spaces before punctuation
        if clean and type(self._tokenizer.model).__name__ != "BPE":
            text = self.clean_up_tokenization(text)
        return text

    def batch_decode(self, sequences: Any, skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: bool | None = None, **kwargs: Any) -> list[str]:
        """Decode each sequence of a batch."""
        return [self.decode(seq, skip_special_tokens, clean_up_tokenization_spaces) for seq in _to_list(sequences)]

    @staticmethod
    def clean_up_tokenization(text: str) -> str:
        """Remove spaces before punctuation and contractions ("a , b" -> "a, b")."""
        for old, new in _CLEANUPS:
            text = text.replace(old, new)
        return text

    # chat -----------------------------------------------------------------------------------
    def get_chat_template(self, chat_template: str | None = None, tools: list[Any] | None = None) -> str:
        from .chat_template import select_template

        return select_template(self.chat_template, chat_template, tools)

    def apply_chat_template(self, conversation: Any, tools: list[Any] | None = None,
                            documents: list[dict[str, str]] | None = None, chat_template: str | None = None,
                            add_generation_prompt: bool = False, continue_final_message: bool = False,
                            tokenize: bool = True, padding: bool | str = False, truncation: bool = False,
                            max_length: int | None = None, return_tensors: str | None = None,
                            return_dict: bool = False, tokenizer_kwargs: dict[str, Any] | None = None,
                            **template_kwargs: Any) -> Any:
        """Render a conversation (or a batch of them) with the chat template; tokenize unless told not to."""
        from .chat_template import apply_chat_template

        return apply_chat_template(
            self, conversation, tools=tools, documents=documents, chat_template=chat_template,
            add_generation_prompt=add_generation_prompt, continue_final_message=continue_final_message,
            tokenize=tokenize, padding=padding, truncation=truncation, max_length=max_length,
            return_tensors=return_tensors, return_dict=return_dict, tokenizer_kwargs=tokenizer_kwargs,
            **template_kwargs)

    # saving ---------------------------------------------------------------------------------
    def push_to_hub(self, repo_id: str, commit_message: str | None = None, revision: str | None = None,
                    hub_dir: str | os.PathLike | None = None, **kwargs: Any) -> str:
        """Commit the tokenizer files to ``repo_id`` ("org/name") in the local hub (``OPENFORMERS_HUB``
        or ``hub_dir``) on branch ``revision`` (default ``main``), keeping the files already there (the
        weights). Returns the commit id."""
        from openformers.hub.local import push_to_hub

        for key in ("private", "token", "create_pr", "safe_serialization", "use_temp_dir"):  # the Hub's options
            kwargs.pop(key, None)
        return push_to_hub(self, repo_id, commit_message, revision, hub_dir, model_card=False, **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, legacy_format: bool | None = None,
                        filename_prefix: str | None = None, push_to_hub: bool = False, **kwargs: Any) -> tuple[str, ...]:
        """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json to ``save_directory``
        (``push_to_hub=True`` then commits them to ``repo_id``, default the folder's name, in the local hub)."""
        if push_to_hub:
            files = self.save_pretrained(save_directory, legacy_format, filename_prefix)
            self.push_to_hub(kwargs.pop("repo_id", None) or Path(save_directory).name, **kwargs)
            return files
        out = Path(save_directory)
        if out.exists() and not out.is_dir():
            raise NotADirectoryError(f"save_pretrained: {out} exists and is not a directory")
        out.mkdir(parents=True, exist_ok=True)
        prefix = f"{filename_prefix}-" if filename_prefix else ""
        tok_path, cfg_path, map_path = (out / f"{prefix}{n}" for n in
                                        ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"))
        self._tokenizer.save(str(tok_path))
        config: dict[str, Any] = {k: v for k, v in self.init_kwargs.items() if _jsonable(v)}
        for key in ("tokenizer_file", "vocab_file", "merges_file", "name_or_path", "auto_map", "gguf_file"):
            config.pop(key, None)
        config.update({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": self.model_max_length,
            "padding_side": self.padding_side,
            "truncation_side": self.truncation_side,
            "model_input_names": self.model_input_names,
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
            "added_tokens_decoder": {str(i): added_token_dict(t) for i, t in self.added_tokens_decoder.items()},
        })
        if self.split_special_tokens:
            config["split_special_tokens"] = True
        specials = {k: added_token_dict(v) for k, v in self.special_tokens_map_extended.items()
                    if k != "additional_special_tokens"}
        for key in SPECIAL_TOKENS_ATTRIBUTES:
            config[key] = str(self._special_tokens[key]) if self._special_tokens.get(key) is not None else None
        if self._extra_special_tokens:
            config["additional_special_tokens"] = self.additional_special_tokens
            specials["additional_special_tokens"] = [added_token_dict(t) for t in self._extra_special_tokens]
        else:
            config.pop("additional_special_tokens", None)
            config.pop("extra_special_tokens", None)
        if "add_bos_token" in self.init_kwargs or "add_eos_token" in self.init_kwargs:
            config["add_bos_token"], config["add_eos_token"] = self._add_bos_token, self._add_eos_token
        if isinstance(self.chat_template, dict):  # several named templates: the list form of the file
            config["chat_template"] = [{"name": k, "template": v} for k, v in self.chat_template.items()]
        elif self.chat_template is not None:
            config["chat_template"] = self.chat_template
        else:
            config.pop("chat_template", None)
        cfg_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        map_path.write_text(json.dumps(specials, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return str(cfg_path), str(map_path), str(tok_path)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_lock", None)  # locks do not pickle (datasets.map with num_proc pickles tokenizers)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name_or_path={self.name_or_path!r}, vocab_size={self.vocab_size}, "
                f"model_max_length={self.model_max_length}, padding_side={self.padding_side!r}, "
                f"truncation_side={self.truncation_side!r}, special_tokens={self.special_tokens_map})")


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def _check_text(text: Any, name: str, is_split_into_words: bool) -> None:
    ok = isinstance(text, str) or (
        isinstance(text, (list, tuple)) and (
            not text or isinstance(text[0], str) or (
                isinstance(text[0], (list, tuple)) and (not text[0] or isinstance(text[0][0], str)))))
    if not ok:
        raise ValueError(f"{name} must be a str, a list of str (a batch, or one pre-split example with "
                         f"is_split_into_words=True) or a list of lists of str; got {type(text).__name__}")
