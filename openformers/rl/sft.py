"""SFTTrainer: supervised fine-tuning on text, prompt-completion or conversational data."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from openformers.rl.base import RLTrainerMixin, apply_peft, load_model, load_tokenizer
from openformers.rl.configs import SFTConfig
from openformers.rl.data import SFTDataCollator, pack_best_fit, rows, tokenize_sft_example, truncate
from openformers.training.trainer import Trainer


class SFTTrainer(RLTrainerMixin, Trainer):
    """The Trainer with TRL's SFT data handling: tokenization (chat template for conversations),
    ``max_length`` truncation, best-fit packing without cross-document attention, and losses
    on completions or assistant turns only. The loss is the model's own token loss."""

    _extra_columns = ("completion_mask", "assistant_masks", "seq_lengths", "position_ids")

    def __init__(self, model: nn.Module | str, args: SFTConfig | None = None, data_collator: Callable | None = None,
                 train_dataset: Any = None, eval_dataset: Any = None, processing_class: Any = None,
                 compute_loss_func: Callable | None = None, compute_metrics: Callable | None = None,
                 callbacks: list | None = None, optimizers: tuple = (None, None),
                 preprocess_logits_for_metrics: Callable | None = None, peft_config: Any = None,
                 formatting_func: Callable[[dict[str, Any]], str] | None = None, tokenizer: Any = None) -> None:
        if args is None:
            name = model if isinstance(model, str) else type(model).__name__
            args = SFTConfig(f"{str(name).rstrip('/').split('/')[-1]}-SFT")
        elif not isinstance(args, SFTConfig):
            args = SFTConfig(**{**_as_kwargs(args)})
        model = load_model(model, args)
        tok = load_tokenizer(processing_class, tokenizer, model)
        if args.eos_token is not None:
            tok.eos_token = args.eos_token
        if args.pad_token is not None:
            tok.pad_token = args.pad_token
        model = apply_peft(model, peft_config, args)
        self.formatting_func = formatting_func
        train_dataset = self._prepare(train_dataset, tok, args, args.packing)
        eval_packing = args.packing if args.eval_packing is None else args.eval_packing
        if isinstance(eval_dataset, dict):
            eval_dataset = {k: self._prepare(v, tok, args, eval_packing) for k, v in eval_dataset.items()}
        else:
            eval_dataset = self._prepare(eval_dataset, tok, args, eval_packing)
        if data_collator is None:
            completion_only = args.completion_only_loss is None or args.completion_only_loss
            data_collator = SFTDataCollator(tok.pad_token_id, completion_only_loss=completion_only,
                                            assistant_only_loss=args.assistant_only_loss,
                                            padding_free=args.padding_free or args.packing,
                                            pad_to_multiple_of=args.pad_to_multiple_of)
        self._init_metrics()
        super().__init__(model=model, args=args, data_collator=data_collator, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, processing_class=tok, compute_loss_func=compute_loss_func,
                         compute_metrics=compute_metrics, callbacks=callbacks, optimizers=optimizers,
                         preprocess_logits_for_metrics=preprocess_logits_for_metrics)

    def _prepare(self, dataset: Any, tok: Any, args: SFTConfig, packing: bool) -> Any:
        if dataset is None or (args.dataset_kwargs or {}).get("skip_prepare_dataset"):
            return dataset
        examples = rows(dataset)
        if examples and "input_ids" in examples[0]:  # already tokenized
            out = [{k: v for k, v in e.items() if k in ("input_ids", "completion_mask", "assistant_masks")} for e in examples]
        else:
            if self.formatting_func is not None:
                examples = [{args.dataset_text_field: _formatted(self.formatting_func, e)} for e in examples]
            out = [tokenize_sft_example(e, tok, text_field=args.dataset_text_field,
                                        assistant_only_loss=args.assistant_only_loss) for e in examples]
        if args.max_length is not None:
            out = [truncate(e, args.max_length, args.truncation_mode) for e in out]
        if packing:
            if args.max_length is None:
                raise ValueError("packing=True needs max_length (the length of a packed row)")
            if args.packing_strategy == "bfd":
                out = pack_best_fit(out, args.max_length)
            else:
                out = _pack_wrapped(out, args.max_length)
        return out

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: int | torch.Tensor | None = None) -> Any:
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        labels = inputs.get("labels")
        logits = outputs["logits"] if isinstance(outputs, dict) or hasattr(outputs, "keys") else None
        if labels is not None and logits is not None:
            with torch.no_grad():
                target = labels[:, 1:]
                keep = target != -100
                if keep.any():
                    correct = (logits[:, :-1].argmax(-1) == target) & keep
                    self._record(model, {"mean_token_accuracy": correct.sum() / keep.sum(),
                                         "num_tokens": float(keep.sum())})
        return (loss, outputs) if return_outputs else loss


def _formatted(func: Callable[[dict[str, Any]], Any], example: dict[str, Any]) -> str:
    text = func(example)
    if isinstance(text, list):  # older TRL formatting functions return one string in a list
        if len(text) != 1:
            raise ValueError(f"formatting_func returned {len(text)} strings for one example; return one string")
        text = text[0]
    if not isinstance(text, str):
        raise TypeError(f"formatting_func must return a string, got {type(text).__name__}")
    return text


def _pack_wrapped(examples: list[dict[str, list[int]]], max_length: int) -> list[dict[str, list[int]]]:
    """Concatenate every sequence and cut the stream into rows of ``max_length`` (documents may be split)."""
    keys = [k for k, v in examples[0].items() if isinstance(v, list)] if examples else []
    stream: dict[str, list[int]] = {k: [] for k in keys}
    bounds: list[int] = []
    for e in examples:
        for k in keys:
            stream[k].extend(e[k])
        bounds.append(len(stream["input_ids"]))
    out = []
    total = len(stream["input_ids"])
    for start in range(0, total, max_length):
        end = min(start + max_length, total)
        row = {k: v[start:end] for k, v in stream.items()}
        cuts = [start] + [b for b in bounds if start < b < end] + [end]
        row["seq_lengths"] = [b - a for a, b in zip(cuts, cuts[1:])]
        out.append(row)
    return out


def _as_kwargs(args: Any) -> dict[str, Any]:
    from dataclasses import fields

    out = {f.name: getattr(args, f.name) for f in fields(args) if f.name not in ("evaluation_strategy", "no_cuda")}
    return out
