"""Dataset shapes of the post-training trainers, tokenization, masks, packing and collators.

The shapes are TRL's: language modelling (``"text"`` or conversational ``"messages"``),
prompt-completion (``"prompt"``/``"completion"``, as strings or as message lists) and
preference pairs (``"prompt"``/``"chosen"``/``"rejected"``, or ``"chosen"``/``"rejected"`` alone).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch


def is_conversational(example: dict[str, Any]) -> bool:
    """Whether the example's text fields are message lists (``[{"role": ..., "content": ...}]``)."""
    for key in ("messages", "prompt", "completion", "chosen", "rejected"):
        value = example.get(key)
        if isinstance(value, list) and value and isinstance(value[0], dict) and "role" in value[0]:
            return True
    return False


def rows(dataset: Any) -> list[dict[str, Any]]:
    """The examples of a map-style dataset (ours, a list of dicts, or anything indexable) as dicts."""
    if isinstance(dataset, list):
        return [dict(r) for r in dataset]
    if hasattr(dataset, "to_list"):
        return dataset.to_list()
    return [dict(dataset[i]) for i in range(len(dataset))]


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _encode_text(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text)["input_ids"])


def _render(tokenizer: Any, messages: list[dict[str, Any]], **kw: Any) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, **kw)


def _chat_ids_and_assistant_mask(tokenizer: Any, messages: list[dict[str, Any]], tools: Any = None,
                                 ) -> tuple[list[int], list[int]]:
    """Token ids of a rendered conversation and a mask of its assistant turns.

    The turns are found from the template's own rendering: the text added by each assistant
    message is the full rendering of the conversation up to it minus the rendering of the
    conversation before it with the generation prompt. No ``{% generation %}`` marks needed.
    """
    kw = {"tools": tools} if tools else {}
    full = _render(tokenizer, messages, **kw)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        before = _render(tokenizer, messages[:i], add_generation_prompt=True, **kw) if i else ""
        upto = _render(tokenizer, messages[: i + 1], **kw)
        if not full.startswith(upto) or not upto.startswith(before):
            raise ValueError(
                "assistant_only_loss: the chat template does not render a conversation as a prefix of its longer "
                f"renderings (turn {i}), so assistant turns cannot be told apart; use completion_only_loss with "
                "prompt/completion data, or a template that renders earlier turns the same way")
        spans.append((len(before), len(upto)))
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    mask = [int(any(s <= start < e for s, e in spans)) for start, _ in offsets]
    bos = getattr(tokenizer, "bos_token", None)
    reference = tokenizer.apply_chat_template(messages, tokenize=True, **kw)
    if len(reference) == len(ids) + 1 and bos is not None and not full.startswith(bos):
        ids, mask = list(reference), [0] + mask  # the tokenizer's BOS, added once
    return ids, mask


def tokenize_sft_example(example: dict[str, Any], tokenizer: Any, *, text_field: str = "text",
                         assistant_only_loss: bool = False) -> dict[str, list[int]]:
    """One SFT example -> ``input_ids`` plus ``completion_mask`` (prompt-completion) and/or
    ``assistant_masks`` (conversational, when ``assistant_only_loss``)."""
    eos = tokenizer.eos_token
    tools = example.get("tools")
    if "prompt" in example and "completion" in example:
        if is_conversational(example):
            kw = {"tools": tools} if tools else {}
            prompt_ids = tokenizer.apply_chat_template(example["prompt"], add_generation_prompt=True, **kw)
            if assistant_only_loss:
                ids, assistant = _chat_ids_and_assistant_mask(tokenizer, example["prompt"] + example["completion"], tools)
            else:
                ids = tokenizer.apply_chat_template(example["prompt"] + example["completion"], **kw)
                assistant = None
        else:
            completion = example["completion"]
            if eos is not None and not completion.endswith(eos):
                completion = completion + eos
            prompt_ids = _encode_text(tokenizer, example["prompt"])
            ids = _encode_text(tokenizer, example["prompt"] + completion)
            assistant = None
        n = common_prefix_length(prompt_ids, ids)
        out = {"input_ids": list(ids), "completion_mask": [0] * n + [1] * (len(ids) - n)}
        if assistant is not None:
            out["assistant_masks"] = assistant
        return out
    if "messages" in example:
        if assistant_only_loss:
            ids, assistant = _chat_ids_and_assistant_mask(tokenizer, example["messages"], tools)
            if 1 not in assistant:
                raise ValueError("assistant_only_loss=True but an example has no assistant turn: "
                                 f"{example['messages']!r}")
            return {"input_ids": ids, "assistant_masks": assistant}
        kw = {"tools": tools} if tools else {}
        return {"input_ids": list(tokenizer.apply_chat_template(example["messages"], **kw))}
    if text_field not in example:
        raise ValueError(f"SFT dataset: an example has none of the columns {text_field!r} (dataset_text_field), "
                         f"'messages' or 'prompt'/'completion'; it has {sorted(example)}. Set dataset_text_field= "
                         f"or pass formatting_func=")
    text = example[text_field]
    if not isinstance(text, str):
        raise TypeError(f"SFT dataset: column {text_field!r} must hold strings, got {type(text).__name__}")
    if eos is not None and not text.endswith(eos):
        text = text + eos
    return {"input_ids": _encode_text(tokenizer, text)}


def truncate(example: dict[str, list[int]], max_length: int | None, mode: str = "keep_start") -> dict[str, list[int]]:
    if max_length is None:
        return example
    cut = (lambda v: v[:max_length]) if mode == "keep_start" else (lambda v: v[-max_length:])
    return {k: cut(v) if isinstance(v, list) else v for k, v in example.items()}


def pack_best_fit(examples: list[dict[str, list[int]]], max_length: int) -> list[dict[str, list[int]]]:
    """Best-fit-decreasing packing: each sequence goes into the fullest bin it fits; no sequence is split
    (sequences longer than ``max_length`` were truncated before). Each packed row keeps ``seq_lengths``."""
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i]["input_ids"]))
    bins: list[list[int]] = []
    space: list[int] = []
    for i in order:
        n = len(examples[i]["input_ids"])
        if n == 0:
            continue
        best, best_left = -1, max_length + 1
        for b, left in enumerate(space):
            if n <= left < best_left:
                best, best_left = b, left
        if best < 0:
            bins.append([i])
            space.append(max_length - n)
        else:
            bins[best].append(i)
            space[best] -= n
    keys = [k for k, v in examples[0].items() if isinstance(v, list)] if examples else []
    packed = []
    for members in bins:
        row: dict[str, list[int]] = {k: [] for k in keys}
        for i in members:
            for k in keys:
                row[k].extend(examples[i][k])
        row["seq_lengths"] = [len(examples[i]["input_ids"]) for i in members]
        packed.append(row)
    return packed


def _pad(seqs: list[list[int]], value: int, side: str = "right", multiple: int | None = None) -> torch.Tensor:
    length = max((len(s) for s in seqs), default=0)
    if multiple:
        length = -(-length // multiple) * multiple
    out = torch.full((len(seqs), length), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            if side == "right":
                out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            else:
                out[i, length - len(s):] = torch.tensor(s, dtype=torch.long)
    return out


class SFTDataCollator:
    """Pads tokenized SFT examples and builds ``labels`` from the loss masks.

    ``padding_free``: the batch becomes one row through ``DataCollatorWithFlattening``, one
    document per example (``seq_lengths`` of packed rows split them further): ``position_ids``
    restart at every document and its first label is ignored, so none is predicted from the one
    before. Decoders of the Llama family read the restarts as a block-diagonal causal mask:
    documents never attend to each other.
    """

    def __init__(self, pad_token_id: int, completion_only_loss: bool = True, assistant_only_loss: bool = False,
                 padding_free: bool = False, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.completion_only_loss = completion_only_loss
        self.assistant_only_loss = assistant_only_loss
        self.padding_free = padding_free
        self.pad_to_multiple_of = pad_to_multiple_of

    def _labels(self, f: dict[str, Any]) -> list[int]:
        ids = list(f["input_ids"])
        keep = [1] * len(ids)
        if self.completion_only_loss and f.get("completion_mask") is not None:
            keep = [a & int(b) for a, b in zip(keep, f["completion_mask"])]
        if self.assistant_only_loss:
            if f.get("assistant_masks") is None:
                raise ValueError("assistant_only_loss=True but the batch has no assistant_masks (conversational data needed)")
            keep = [a & int(b) for a, b in zip(keep, f["assistant_masks"])]
        return [t if k else -100 for t, k in zip(ids, keep)]

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        labels = [self._labels(f) for f in features]
        ids = [list(f["input_ids"]) for f in features]
        if self.padding_free:
            from openformers.data.collators import DataCollatorWithFlattening

            documents = []
            for f, i, lab in zip(features, ids, labels):
                start = 0
                for n in list(f.get("seq_lengths") or [len(i)]):
                    documents.append({"input_ids": i[start:start + n], "labels": lab[start:start + n]})
                    start += n
            return DataCollatorWithFlattening()(documents)
        input_ids = _pad(ids, self.pad_token_id, multiple=self.pad_to_multiple_of)
        attention = _pad([[1] * len(i) for i in ids], 0, multiple=self.pad_to_multiple_of)
        return {"input_ids": input_ids, "attention_mask": attention,
                "labels": _pad(labels, -100, multiple=self.pad_to_multiple_of)}


# -- preference pairs ----------------------------------------------------------------------------
def tokenize_preference_example(example: dict[str, Any], tokenizer: Any, *, add_eos: bool = True
                                ) -> dict[str, list[int]]:
    """``prompt``/``chosen``/``rejected`` (or chosen/rejected alone; strings or messages) ->
    ``prompt_ids`` (possibly empty), ``chosen_ids``, ``rejected_ids`` (completions only)."""
    for key in ("chosen", "rejected"):
        if key not in example:
            raise ValueError(f"preference dataset: an example lacks the {key!r} column (it has {sorted(example)})")
    eos = tokenizer.eos_token
    prompt = example.get("prompt")
    if is_conversational(example):
        prompt_msgs = prompt or []
        prompt_ids = (tokenizer.apply_chat_template(prompt_msgs, add_generation_prompt=True) if prompt_msgs else [])
        out: dict[str, list[int]] = {"prompt_ids": list(prompt_ids)}
        for key in ("chosen", "rejected"):
            full = tokenizer.apply_chat_template(prompt_msgs + example[key])
            n = common_prefix_length(prompt_ids, full)
            if prompt_msgs and n < len(prompt_ids):
                out["prompt_ids"] = list(prompt_ids[:n])
            out[f"{key}_ids"] = list(full[len(out["prompt_ids"]):])
        return out
    prompt_ids = _encode_text(tokenizer, prompt) if prompt else []
    out = {"prompt_ids": prompt_ids}
    for key in ("chosen", "rejected"):
        text = example[key]
        if add_eos and eos is not None and not text.endswith(eos):
            text = text + eos
        full = _encode_text(tokenizer, (prompt or "") + text)
        n = common_prefix_length(prompt_ids, full)
        out[f"{key}_ids"] = full[n:]
        out["prompt_ids"] = prompt_ids[:n] if n < len(out["prompt_ids"]) else out["prompt_ids"]
    return out


def preference_pairs(dataset: Any, tokenizer: Any) -> Iterator[tuple[dict[str, Any], dict[str, list[int]]]]:
    """Each example of a preference dataset with its ``prompt_ids``/``chosen_ids``/``rejected_ids``: the
    text (or conversational) columns tokenized by :func:`tokenize_preference_example`, or token columns
    taken as they are (``prompt_ids``/``chosen_ids``/``rejected_ids``, or whole sequences in
    ``chosen_input_ids``/``rejected_input_ids``). The DPO and reward trainers both read pairs this way."""
    for example in rows(dataset):
        if "chosen_ids" in example:
            ids = {k: list(example.get(k) or []) for k in ("prompt_ids", "chosen_ids", "rejected_ids")}
        elif "chosen_input_ids" in example:
            ids = {"prompt_ids": [], "chosen_ids": list(example["chosen_input_ids"]),
                   "rejected_ids": list(example["rejected_input_ids"])}
        else:
            ids = tokenize_preference_example(example, tokenizer)
        yield example, ids


class PreferenceCollator:
    """Stacks chosen then rejected sequences (``prompt + completion``) into one right-padded batch
    [2b, s] with ``completion_mask`` marking the completion tokens; extra float columns pass through."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        seqs, masks = [], []
        for key in ("chosen_ids", "rejected_ids"):
            for f in features:
                p, c = list(f["prompt_ids"]), list(f[key])
                seqs.append(p + c)
                masks.append([0] * len(p) + [1] * len(c))
        batch = {"input_ids": _pad(seqs, self.pad_token_id, multiple=self.pad_to_multiple_of),
                 "attention_mask": _pad([[1] * len(s) for s in seqs], 0, multiple=self.pad_to_multiple_of),
                 "completion_mask": _pad(masks, 0, multiple=self.pad_to_multiple_of)}
        for key in ("margin", "ref_chosen_logps", "ref_rejected_logps"):
            if key in features[0]:
                batch[key] = torch.tensor([float(f[key]) for f in features])
        return batch


def map_rows(dataset: Any, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> list[dict[str, Any]]:
    return [fn(r) for r in rows(dataset)]
