"""``text-generation``: continue prompts or chats with a causal language model."""
from __future__ import annotations

import copy
from typing import Any

import torch

from .base import Pipeline

_PREPROCESS_KEYS = ("prefix", "add_special_tokens", "truncation", "padding", "continue_final_message",
                    "tokenizer_encode_kwargs", "tools", "documents")


def _is_chat(value: Any) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) > 0
            and all(isinstance(m, dict) and "role" in m and "content" in m for m in value))


class TextGenerationPipeline(Pipeline):
    """Generate text with ``model.generate``.

    Inputs: a prompt, a list of prompts, a chat (a list of ``{"role", "content"}`` messages, to
    which the tokenizer's chat template is applied with a generation prompt) or a list of chats.
    Each input gives a list of ``num_return_sequences`` results ``{"generated_text": ...}``: the
    prompt plus the new text (``return_full_text=False``: the new text only; for a chat, the
    messages plus the new assistant message), or ``{"generated_token_ids": ...}`` with
    ``return_tensors=True``. Every other keyword argument (``max_new_tokens``, ``do_sample``,
    ``temperature``, ``streamer``, ``generation_config`` ...) goes to ``generate``. What neither the
    call nor the model's generation config sets follows the reference's defaults: at most 256 new
    tokens, sampling (``do_sample=True``, ``temperature=0.7``); pass ``do_sample=False`` for greedy.
    """

    task = "text-generation"
    padding_side = "left"

    def _sanitize_parameters(self, return_full_text: bool | None = None, return_tensors: bool | None = None,
                             return_text: bool | None = None, return_type: Any = None,
                             clean_up_tokenization_spaces: bool | None = None, skip_special_tokens: bool | None = None,
                             stop_sequence: Any = None, max_length: int | None = None,
                             **generate_kwargs: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        pre = {k: generate_kwargs.pop(k) for k in _PREPROCESS_KEYS if k in generate_kwargs}
        if max_length is not None:
            generate_kwargs["max_length"] = max_length
            if pre.get("truncation"):
                pre["max_length"] = max_length
        if stop_sequence is not None:
            generate_kwargs["stop_strings"] = [stop_sequence] if isinstance(stop_sequence, str) else list(stop_sequence)
        post: dict[str, Any] = {}
        if return_full_text is not None and return_type is None:
            if return_text is not None:
                raise ValueError("return_text and return_full_text cannot be given together")
            if return_tensors is not None:
                raise ValueError("return_full_text and return_tensors cannot be given together")
            return_type = "full_text" if return_full_text else "new_text"
        if return_tensors is not None and return_type is None:
            if return_text is not None:
                raise ValueError("return_text and return_tensors cannot be given together")
            return_type = "tensors" if return_tensors else None
        if return_text is not None and return_type is None:
            return_type = "full_text" if return_text else None
        if return_type is not None:
            post["return_type"] = str(getattr(return_type, "name", return_type)).lower()
        if clean_up_tokenization_spaces is not None:
            post["clean_up_tokenization_spaces"] = clean_up_tokenization_spaces
        if skip_special_tokens is not None:
            post["skip_special_tokens"] = skip_special_tokens
        if "continue_final_message" in pre:
            post["continue_final_message"] = pre["continue_final_message"]
        return pre, generate_kwargs, post

    def _is_single(self, inputs: Any) -> bool:
        return _is_chat(inputs) or super()._is_single(inputs)

    def preprocess(self, prompt: Any, prefix: str = "", add_special_tokens: bool | None = None,
                   truncation: Any = None, padding: Any = None, max_length: int | None = None,
                   continue_final_message: bool | None = None, tokenizer_encode_kwargs: dict[str, Any] | None = None,
                   tools: Any = None, documents: Any = None) -> list[dict[str, Any]]:
        kwargs = {k: v for k, v in dict(add_special_tokens=add_special_tokens, truncation=truncation,
                                        max_length=max_length).items() if v is not None}
        kwargs.update(tokenizer_encode_kwargs or {})
        if _is_chat(prompt):
            messages = list(prompt)
            cont = messages[-1]["role"] == "assistant" if continue_final_message is None else continue_final_message
            enc = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=not cont, continue_final_message=cont, return_dict=True,
                tools=tools, documents=documents, **kwargs)
        elif isinstance(prompt, str):
            enc = self.tokenizer(prefix + prompt, **kwargs)
        else:
            raise ValueError(f"text generation takes a prompt string or a chat (a list of {{'role', 'content'}} "
                             f"messages), got {type(prompt).__name__}")
        feat = {k: list(enc[k]) for k in ("input_ids", "attention_mask") if k in enc}
        feat["prompt"] = prompt
        return [feat]

    # defaults for what neither the call nor the model's generation config sets (the reference's)
    _default_generation = {"max_new_tokens": 256, "do_sample": True, "temperature": 0.7}
    _sampling_params = frozenset({"temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff"})

    def _generate_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's generation settings, on top of the model's generation config, plus the pipeline's
        defaults for the rest: 256 new tokens, sampling at temperature 0.7 (the sampling ones only when
        sampling), and the tokenizer's pad token."""
        kwargs = dict(kwargs)
        gen_config = getattr(self.model, "generation_config", None)
        user_config = kwargs.get("generation_config")
        set_params: dict[str, Any] = {}
        for config in (gen_config, user_config):
            if config is not None and hasattr(config, "to_diff_dict"):
                set_params.update({k: v for k, v in config.to_diff_dict().items() if not k.startswith("_")})
        set_params.update(kwargs)
        defaults = dict(self._default_generation)
        if self.tokenizer.pad_token_id is not None:
            defaults["pad_token_id"] = self.tokenizer.pad_token_id
        added = {k: v for k, v in defaults.items()
                 if k not in set_params and not (k == "max_new_tokens" and "max_length" in set_params)}
        if not {**set_params, **added}.get("do_sample"):
            added = {k: v for k, v in added.items() if k not in self._sampling_params}
        if "stop_strings" in kwargs:
            kwargs.setdefault("tokenizer", self.tokenizer)
        if user_config is None:
            return {**kwargs, **added}
        user_config = copy.deepcopy(user_config)
        user_config.update(**added)
        return {**kwargs, "generation_config": user_config}

    def _forward(self, model_inputs: dict[str, torch.Tensor], **generate_kwargs: Any) -> dict[str, Any]:
        input_ids = model_inputs["input_ids"]
        if generate_kwargs.get("streamer") is not None and input_ids.shape[0] > 1:
            raise ValueError("a streamer follows one sequence: use batch_size=1 with streamer=")
        kwargs = self._generate_kwargs(generate_kwargs)
        mask = model_inputs.get("attention_mask")
        b, width = input_ids.shape
        lengths = mask.sum(1).tolist() if mask is not None else [width] * b
        caps = [None] * b
        if kwargs.get("max_length") is not None and kwargs.get("max_new_tokens") is None and len(set(lengths)) > 1:
            # max_length counts each prompt's own tokens, not the padding of the batch: generate enough
            # for the shortest prompt and cut every row at its own limit
            max_length = kwargs.pop("max_length")
            kwargs["max_new_tokens"] = max(max_length - min(lengths), 0)
            caps = [max(max_length - n, 0) for n in lengths]
        out = self.model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
        sequences = out if isinstance(out, torch.Tensor) else out.sequences
        per_row = sequences.shape[0] // b
        rows = sequences.reshape(b, per_row, -1).cpu()
        return {"new_tokens": [[seq[width:width + caps[i] if caps[i] is not None else None].tolist() for seq in rows[i]]
                               for i in range(b)]}

    def postprocess(self, outputs: dict[str, Any], return_type: str | None = None,
                    clean_up_tokenization_spaces: bool | None = None, skip_special_tokens: bool | None = None,
                    continue_final_message: bool | None = None) -> list[dict[str, Any]]:
        return_type = return_type or "full_text"
        prompt, prompt_ids = outputs["prompt"], list(outputs["input_ids"])
        skip = True if skip_special_tokens is None else skip_special_tokens
        records = []
        for new in outputs["new_tokens"]:
            if return_type == "tensors":
                records.append({"generated_token_ids": prompt_ids + new})
                continue
            decode_kwargs = {} if clean_up_tokenization_spaces is None else {
                "clean_up_tokenization_spaces": clean_up_tokenization_spaces}
            text = self.tokenizer.decode(new, skip_special_tokens=skip, **decode_kwargs)
            if return_type == "full_text":
                if isinstance(prompt, str):
                    text = prompt + text
                else:
                    messages = list(prompt)
                    cont = messages[-1]["role"] == "assistant" if continue_final_message is None else continue_final_message
                    if cont:
                        last = messages[-1]
                        text = messages[:-1] + [{"role": last["role"], "content": last["content"] + text}]
                    else:
                        text = messages + [{"role": "assistant", "content": text}]
            records.append({"generated_text": text})
        return records
