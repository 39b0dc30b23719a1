"""Shared checks for the Llama family (Llama, Mistral, Qwen2): parity with transformers on tiny
random models, padding, cached decoding, attention backends, save/load, checkpointing, tying."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

import openformers
from tests.models.parity import assert_close, build_reference, random_batch

VOCAB = 128
HEADS = ("Model", "ForCausalLM", "ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering")
AUTO = {
    "Model": "AutoModel",
    "ForCausalLM": "AutoModelForCausalLM",
    "ForSequenceClassification": "AutoModelForSequenceClassification",
    "ForTokenClassification": "AutoModelForTokenClassification",
    "ForQuestionAnswering": "AutoModelForQuestionAnswering",
}


def tiny_config(**overrides: Any) -> dict[str, Any]:
    cfg = dict(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, num_labels=3,
    )
    cfg.update(overrides)
    return cfg


def _ours(prefix: str, head: str) -> type:
    return getattr(openformers, f"{prefix}{head}")


def _labels(head: str, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    b, s = ids.shape
    if head == "ForCausalLM":
        labels = ids.clone()
        labels[:, :2] = -100
        return {"labels": labels}
    if head == "ForSequenceClassification":
        return {"labels": torch.randint(0, 3, (b,), generator=g)}
    if head == "ForTokenClassification":
        return {"labels": torch.randint(0, 3, (b, s), generator=g)}
    if head == "ForQuestionAnswering":
        return {"start_positions": torch.tensor([1, 3]), "end_positions": torch.tensor([2, 4])}
    return {}


def _main_output(out: Any) -> torch.Tensor:
    for key in ("logits", "start_logits", "last_hidden_state"):
        if key in out.keys():
            return out[key]
    raise AssertionError(f"no main output in {list(out.keys())}")


def check_head_parity(prefix: str, head: str, tmp_path: Path, **config_kw: Any) -> None:
    """transformers model -> save -> load here (class and Auto class): outputs, hidden states,
    attentions (eager) and losses equal, on a right-padded batch (compared on real tokens)."""
    ref = build_reference(f"{prefix}{head}", f"{prefix}Config", tmp_path, **tiny_config(**config_kw))
    ref.set_attn_implementation("eager")
    ids, mask = random_batch(VOCAB, batch=2, seq=7, pad_last=2)
    ids[mask == 0] = 0  # pad token, so sequence classification finds the last real token
    extra = _labels(head, ids)
    with torch.no_grad():
        theirs = ref(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True, **extra)
    ours_cls = _ours(prefix, head).from_pretrained(tmp_path, attn_implementation="eager")
    ours_auto = getattr(openformers, AUTO[head]).from_pretrained(tmp_path, attn_implementation="eager")
    assert type(ours_auto) is type(ours_cls)
    token_mask = None if head == "ForSequenceClassification" else mask
    for model in (ours_cls, ours_auto):
        with torch.no_grad():
            ours = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True, **extra)
        assert_close(_main_output(ours), _main_output(theirs), mask=token_mask, what=f"{prefix}{head} output")
        if head == "ForQuestionAnswering":
            assert_close(ours.end_logits, theirs.end_logits, mask=mask, what="end_logits")
        assert len(ours.hidden_states) == len(theirs.hidden_states) == 3
        for i, (a, b) in enumerate(zip(ours.hidden_states, theirs.hidden_states)):
            assert_close(a, b, mask=mask, what=f"hidden_states[{i}]")
        assert len(ours.attentions) == len(theirs.attentions) == 2
        for i, (a, b) in enumerate(zip(ours.attentions, theirs.attentions)):
            # query rows of real tokens; padded keys carry zero weight on both sides
            assert_close(a.transpose(1, 2), b.transpose(1, 2), mask=mask, what=f"attentions[{i}]")
        if extra:
            assert_close(ours.loss, theirs.loss, what=f"{prefix}{head} loss")


def check_unpadded_sdpa_parity(prefix: str, tmp_path: Path, seq: int = 9, **config_kw: Any) -> None:
    """Default (sdpa) backends on both sides, no mask, full logits."""
    ref = build_reference(f"{prefix}ForCausalLM", f"{prefix}Config", tmp_path, **tiny_config(**config_kw))
    ids = torch.randint(3, VOCAB, (2, seq), generator=torch.Generator().manual_seed(3))
    ours = _ours(prefix, "ForCausalLM").from_pretrained(tmp_path)
    with torch.no_grad():
        assert_close(ours(ids).logits, ref(ids).logits, what=f"{prefix} logits")


def _position_ids(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)


def check_padding(prefix: str, **config_kw: Any) -> None:
    """Each row of a left- or right-padded batch equals the row alone on its real tokens."""
    torch.manual_seed(0)
    model = _ours(prefix, "ForCausalLM")(_ours(prefix, "Config")(**tiny_config(**config_kw))).eval()
    for left in (False, True):
        ids, mask = random_batch(VOCAB, batch=3, seq=8, pad_last=3, left=left, seed=4)
        with torch.no_grad():
            batched = model(ids, attention_mask=mask, position_ids=_position_ids(mask)).logits
            for row in range(3):
                keep = mask[row].bool()
                alone = model(ids[row : row + 1, keep]).logits[0]
                assert_close(batched[row, keep], alone, what=f"row {row} (left={left})")


def check_cached_decoding(prefix: str, **config_kw: Any) -> None:
    """Prefill, then one token at a time with the cache (greedy on our own logits) == full forward,
    for a plain and a left-padded batch."""
    torch.manual_seed(0)
    model = _ours(prefix, "ForCausalLM")(_ours(prefix, "Config")(**tiny_config(**config_kw))).eval()
    ids, mask = random_batch(VOCAB, batch=2, seq=5, pad_last=2, left=True, seed=5)
    for attention_mask in (None, mask):
        seq, am = ids.clone(), (attention_mask.clone() if attention_mask is not None else None)
        with torch.no_grad():
            pos = _position_ids(am) if am is not None else None
            out = model(seq, attention_mask=am, position_ids=pos, use_cache=True)
            cache, steps = out.past_key_values, [out.logits[:, -1]]
            for _ in range(6):
                nxt = steps[-1].argmax(-1, keepdim=True)
                seq = torch.cat([seq, nxt], dim=1)
                if am is not None:
                    am = torch.cat([am, torch.ones_like(nxt)], dim=1)
                    pos = _position_ids(am)[:, -1:]
                out = model(nxt, attention_mask=am, position_ids=pos, past_key_values=cache, use_cache=True,
                            logits_to_keep=1)
                cache = out.past_key_values
                steps.append(out.logits[:, -1])
            assert cache.get_seq_length() == seq.shape[1]
            full = model(seq, attention_mask=am, position_ids=_position_ids(am) if am is not None else None).logits
        n0 = ids.shape[1] - 1
        assert_close(torch.stack(steps, 1), full[:, n0:], atol=1e-4, what=f"cached decoding (mask={am is not None})")


def check_eager_vs_sdpa(prefix: str, **config_kw: Any) -> None:
    torch.manual_seed(0)
    config = _ours(prefix, "Config")(**tiny_config(**config_kw))
    model = _ours(prefix, "ForCausalLM")(config).eval()
    for left in (False, True):
        ids, mask = random_batch(VOCAB, batch=2, seq=9, pad_last=3, left=left, seed=6)
        outs = {}
        for impl in ("eager", "sdpa"):
            config.attn_implementation = impl
            with torch.no_grad():
                outs[impl] = model(ids, attention_mask=mask).logits
        assert_close(outs["sdpa"], outs["eager"], mask=mask, what=f"sdpa vs eager (left={left})")


def check_save_here_load_there(prefix: str, tmp_path: Path, **config_kw: Any) -> None:
    import transformers

    torch.manual_seed(0)
    for head in ("ForCausalLM", "ForQuestionAnswering"):
        model = _ours(prefix, head)(_ours(prefix, "Config")(**tiny_config(**config_kw))).eval()
        path = tmp_path / head
        model.save_pretrained(path)
        theirs = getattr(transformers, f"{prefix}{head}").from_pretrained(path).eval()
        ids = torch.randint(3, VOCAB, (2, 6), generator=torch.Generator().manual_seed(7))
        with torch.no_grad():
            assert_close(_main_output(model(ids)), _main_output(theirs(ids)), what=f"{prefix}{head} saved here")


def check_gradient_checkpointing(prefix: str, **config_kw: Any) -> None:
    torch.manual_seed(0)
    config = _ours(prefix, "Config")(**tiny_config(**config_kw))
    model = _ours(prefix, "ForCausalLM")(config).train()
    config.attention_dropout = 0.0
    ids, mask = random_batch(VOCAB, batch=2, seq=6, pad_last=2, seed=8)
    grads = []
    for enable in (False, True):
        model.zero_grad()
        if enable:
            model.gradient_checkpointing_enable()
        out = model(ids, attention_mask=mask, labels=ids)
        assert out.past_key_values is None or not enable
        out.loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    model.gradient_checkpointing_disable()
    for name in grads[0]:
        assert_close(grads[1][name], grads[0][name], atol=1e-6, what=f"grad {name}")


def check_tied_embeddings(prefix: str, tmp_path: Path, **config_kw: Any) -> None:
    from safetensors import safe_open

    torch.manual_seed(0)
    model = _ours(prefix, "ForCausalLM")(_ours(prefix, "Config")(**tiny_config(tie_word_embeddings=True, **config_kw)))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    model.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "model.embed_tokens.weight" in keys and "lm_head.weight" not in keys
    loaded = _ours(prefix, "ForCausalLM").from_pretrained(tmp_path)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    ids = torch.randint(3, VOCAB, (1, 5))
    with torch.no_grad():
        assert_close(loaded(ids).logits, model.eval()(ids).logits, what="tied reload")
    import transformers

    theirs = getattr(transformers, f"{prefix}ForCausalLM").from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert_close(theirs(ids).logits, model(ids).logits, what="tied, loaded by transformers")


def check_generate_parity(prefix: str, tmp_path: Path, **config_kw: Any) -> None:
    """Greedy and beam-search tokens equal transformers' ``generate`` on a left-padded batch."""
    ref = build_reference(f"{prefix}ForCausalLM", f"{prefix}Config", tmp_path, **tiny_config(**config_kw))
    ours = _ours(prefix, "ForCausalLM").from_pretrained(tmp_path).eval()
    ids, mask = random_batch(VOCAB, batch=2, seq=6, pad_last=2, left=True, seed=9)
    ids[mask == 0] = 0
    for kw in ({"do_sample": False}, {"do_sample": False, "num_beams": 3}):
        args = dict(attention_mask=mask, max_new_tokens=8, pad_token_id=0, eos_token_id=None, **kw)
        with torch.no_grad():
            theirs = ref.generate(ids, **args)
            mine = ours.generate(ids, **args)
        assert torch.equal(mine, theirs), f"{prefix} generate {kw}: {mine.tolist()} != {theirs.tolist()}"
