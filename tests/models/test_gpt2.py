"""GPT-2 parity with transformers on tiny random models: every head, cache, padding, backends, saving."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import openformers
from openformers.models.gpt2 import (
    GPT2Config,
    GPT2ForQuestionAnswering,
    GPT2ForSequenceClassification,
    GPT2ForTokenClassification,
    GPT2LMHeadModel,
    GPT2Model,
)
from openformers.modules.conv1d import Conv1D
from tests.models.parity import assert_close, build_reference, random_batch

transformers = pytest.importorskip("transformers")

VOCAB = 128
CONFIG = dict(
    vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=1, eos_token_id=2,
    pad_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
)
HEADS = [
    ("GPT2Model", GPT2Model, "AutoModel"),
    ("GPT2LMHeadModel", GPT2LMHeadModel, "AutoModelForCausalLM"),
    ("GPT2ForSequenceClassification", GPT2ForSequenceClassification, "AutoModelForSequenceClassification"),
    ("GPT2ForTokenClassification", GPT2ForTokenClassification, "AutoModelForTokenClassification"),
    ("GPT2ForQuestionAnswering", GPT2ForQuestionAnswering, "AutoModelForQuestionAnswering"),
]


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpt2_lm")
    ref = build_reference("GPT2LMHeadModel", "GPT2Config", path, attn_implementation="eager", **CONFIG)
    return path, ref


def _outputs(out, name: str) -> dict[str, torch.Tensor]:
    keys = {"GPT2Model": ["last_hidden_state"], "GPT2ForQuestionAnswering": ["start_logits", "end_logits"]}
    return {k: out[k] for k in keys.get(name, ["logits"])}


@pytest.mark.parametrize("hf_name,cls,auto_name", HEADS)
def test_parity_every_head(tmp_path, hf_name, cls, auto_name):
    extra = {"num_labels": 3} if "Classification" in hf_name else {}
    ref = build_reference(hf_name, "GPT2Config", tmp_path, attn_implementation="eager", **CONFIG, **extra)
    ids, mask = random_batch(VOCAB, batch=2, seq=7, pad_last=2)
    ids = ids.masked_fill(mask == 0, CONFIG["pad_token_id"])
    labels: dict[str, torch.Tensor] = {}
    if hf_name == "GPT2LMHeadModel":
        labels = {"labels": ids.masked_fill(mask == 0, -100)}
    elif hf_name == "GPT2ForSequenceClassification":
        labels = {"labels": torch.tensor([0, 2])}
    elif hf_name == "GPT2ForTokenClassification":
        labels = {"labels": torch.randint(0, 3, ids.shape).masked_fill(mask == 0, -100)}
    elif hf_name == "GPT2ForQuestionAnswering":
        labels = {"start_positions": torch.tensor([1, 3]), "end_positions": torch.tensor([2, 4])}
    with torch.no_grad():
        theirs = ref(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True, **labels)
    auto_cls = getattr(openformers, auto_name)
    for model in (cls.from_pretrained(tmp_path, attn_implementation="eager"),
                  auto_cls.from_pretrained(tmp_path, attn_implementation="eager")):
        assert type(model) is cls
        with torch.no_grad():
            ours = model(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True, **labels)
        token_mask = None if hf_name in ("GPT2ForSequenceClassification",) else mask
        for key, value in _outputs(theirs, hf_name).items():
            assert_close(ours[key], value, mask=token_mask, what=f"{hf_name}.{key}")
        if labels:
            assert_close(ours.loss, theirs.loss, atol=1e-5, what=f"{hf_name}.loss")
        assert len(ours.hidden_states) == len(theirs.hidden_states) == CONFIG["n_layer"] + 1
        for i, (a, b) in enumerate(zip(ours.hidden_states, theirs.hidden_states)):
            assert_close(a, b, mask=mask, what=f"hidden_states[{i}]")
        assert len(ours.attentions) == len(theirs.attentions) == CONFIG["n_layer"]
        for i, (a, b) in enumerate(zip(ours.attentions, theirs.attentions)):
            assert a.shape == (2, CONFIG["n_head"], 7, 7)
            # every head, every real query row
            assert_close(a.permute(0, 2, 1, 3), b.permute(0, 2, 1, 3), mask=mask, what=f"attentions[{i}]")


def test_defaults_and_aliases_match_reference():
    ours, theirs = GPT2Config(), transformers.GPT2Config()
    for key in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner", "activation_function",
                "resid_pdrop", "embd_pdrop", "attn_pdrop", "layer_norm_epsilon", "initializer_range",
                "scale_attn_weights", "scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "use_cache",
                "bos_token_id", "eos_token_id", "pad_token_id", "tie_word_embeddings", "summary_type"):
        assert getattr(ours, key) == getattr(theirs, key), key
    cfg = GPT2Config(hidden_size=48, num_hidden_layers=3, num_attention_heads=6, max_position_embeddings=99)
    assert (cfg.n_embd, cfg.n_layer, cfg.n_head, cfg.n_positions) == (48, 3, 6, 99)
    assert cfg.hidden_size == 48 and cfg.num_hidden_layers == 3
    assert "hidden_size" not in cfg.to_dict() and cfg.to_dict()["n_embd"] == 48


@pytest.mark.parametrize("left", [False, True])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_padded_batch_equals_rows_alone(lm_dir, left, attn):
    path, _ = lm_dir
    model = GPT2LMHeadModel.from_pretrained(path, attn_implementation=attn)
    ids, mask = random_batch(VOCAB, batch=3, seq=8, pad_last=3, left=left, seed=1)
    # positions follow the real tokens (what generation passes for left padding)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        batched = model(ids, attention_mask=mask, position_ids=pos).logits
        for row in range(3):
            keep = mask[row].bool()
            alone = model(ids[row : row + 1, keep]).logits[0]
            assert_close(batched[row, keep], alone, what=f"row {row} ({'left' if left else 'right'}, {attn})")


def test_default_positions_ignore_mask_like_reference(lm_dir):
    path, ref = lm_dir
    model = GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager")
    ids, mask = random_batch(VOCAB, batch=2, seq=6, pad_last=2, left=True)
    with torch.no_grad():
        assert_close(model(ids, attention_mask=mask).logits, ref(ids, attention_mask=mask).logits, mask=mask)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_incremental_decoding_matches_full_forward(lm_dir, attn):
    path, ref = lm_dir
    model = GPT2LMHeadModel.from_pretrained(path, attn_implementation=attn)
    ids, _ = random_batch(VOCAB, batch=2, seq=9, pad_last=0, seed=2)
    with torch.no_grad():
        full = model(ids).logits
        out = model(ids[:, :5], use_cache=True)
        steps = [out.logits]
        past = out.past_key_values
        assert past.get_seq_length() == 5
        for t in range(5, 9):
            out = model(ids[:, t : t + 1], past_key_values=past, use_cache=True)
            past = out.past_key_values
            steps.append(out.logits)
        assert_close(torch.cat(steps, dim=1), full, what="cached decoding")
        # a padded prompt: mask covers cached + new positions
        mask = torch.ones(2, 9, dtype=torch.long)
        mask[1, :2] = 0
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        full = model(ids, attention_mask=mask, position_ids=pos).logits
        out = model(ids[:, :6], attention_mask=mask[:, :6], position_ids=pos[:, :6], use_cache=True)
        step = model(ids[:, 6:], past_key_values=out.past_key_values, attention_mask=mask, position_ids=pos[:, 6:]).logits
        assert_close(step, full[:, 6:], what="cached decoding with padding")
        # legacy tuple caches are accepted
        legacy = model(ids[:, :5], use_cache=True).past_key_values.to_legacy_cache()
        assert_close(model(ids[:, 5:], past_key_values=legacy).logits, model(ids).logits[:, 5:], what="legacy cache")


def test_eager_equals_sdpa(lm_dir):
    path, _ = lm_dir
    eager = GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager")
    sdpa = GPT2LMHeadModel.from_pretrained(path, attn_implementation="sdpa")
    ids, mask = random_batch(VOCAB, batch=2, seq=7, pad_last=2)
    with torch.no_grad():
        assert_close(sdpa(ids, attention_mask=mask).logits, eager(ids, attention_mask=mask).logits, mask=mask)
        assert_close(sdpa(ids).logits, eager(ids).logits)


@pytest.mark.parametrize("cls_name", ["GPT2LMHeadModel", "GPT2ForSequenceClassification"])
def test_saved_here_loads_in_transformers(tmp_path, cls_name):
    cls = getattr(openformers, cls_name)
    torch.manual_seed(0)
    extra = {"num_labels": 3} if "Classification" in cls_name else {}
    model = cls(GPT2Config(**CONFIG, **extra, attn_implementation="eager")).eval()
    model.save_pretrained(tmp_path)
    theirs = getattr(transformers, cls_name).from_pretrained(tmp_path, attn_implementation="eager").eval()
    ids, mask = random_batch(VOCAB, batch=2, seq=6, pad_last=1)
    ids = ids.masked_fill(mask == 0, 0)
    with torch.no_grad():
        assert_close(model(ids, attention_mask=mask).logits, theirs(ids, attention_mask=mask).logits)


def test_tied_lm_head_kept_tied_and_saved_once(lm_dir, tmp_path):
    path, _ = lm_dir
    model = GPT2LMHeadModel.from_pretrained(path)
    assert model.lm_head.weight is model.transformer.wte.weight
    model.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
    assert "lm_head.weight" not in keys and "transformer.wte.weight" in keys
    again = GPT2LMHeadModel.from_pretrained(tmp_path)
    assert again.lm_head.weight is again.transformer.wte.weight
    with torch.no_grad():
        again.transformer.wte.weight[0, 0] = 123.0
    assert again.lm_head.weight[0, 0].item() == 123.0
    untied = GPT2LMHeadModel(GPT2Config(**CONFIG, tie_word_embeddings=False))
    assert untied.lm_head.weight is not untied.transformer.wte.weight


def test_old_checkpoint_names_and_causal_buffers(lm_dir, tmp_path):
    """OpenAI-era files: no ``transformer.`` prefix, ``attn.bias``/``attn.masked_bias`` buffers."""
    path, ref = lm_dir
    sd = load_file(str(path / "model.safetensors"))
    old = {k.removeprefix("transformer."): v for k, v in sd.items() if k != "lm_head.weight"}
    for i in range(CONFIG["n_layer"]):
        old[f"h.{i}.attn.bias"] = torch.tril(torch.ones(64, 64)).view(1, 1, 64, 64)
        old[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    save_file(old, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    model, info = GPT2LMHeadModel.from_pretrained(tmp_path, output_loading_info=True)
    assert info["unexpected_keys"] == [] and info["missing_keys"] == []
    base = GPT2Model.from_pretrained(tmp_path)
    ids, _ = random_batch(VOCAB, pad_last=0)
    with torch.no_grad():
        assert_close(model(ids).logits, ref(ids).logits)
        assert_close(base(ids).last_hidden_state, ref.transformer(ids).last_hidden_state)


def test_gradient_checkpointing_same_gradients(lm_dir):
    path, ref = lm_dir
    ids, mask = random_batch(VOCAB, batch=2, seq=6, pad_last=1)
    labels = ids.masked_fill(mask == 0, -100)
    grads = []
    for gc in (False, True):
        model = GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager").train()
        if gc:
            model.gradient_checkpointing_enable()
        out = model(ids, attention_mask=mask, labels=labels)
        assert out.past_key_values is None or not gc
        out.loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    ref.train()
    ref(ids, attention_mask=mask, labels=labels).loss.backward()
    ref.eval()
    ref_grads = dict(ref.named_parameters())
    for name, g in grads[0].items():
        assert_close(grads[1][name], g, atol=1e-6, what=f"checkpointed grad {name}")
        assert_close(g, ref_grads[name].grad, atol=1e-5, what=f"reference grad {name}")
    ref.zero_grad()


def test_lm_head_options(lm_dir):
    path, ref = lm_dir
    model = GPT2LMHeadModel.from_pretrained(path)
    ids, mask = random_batch(VOCAB, batch=2, seq=7, pad_last=2)
    labels = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        full = model(ids, labels=labels)
        assert_close(model(ids, logits_to_keep=1).logits, full.logits[:, -1:])
        assert_close(model(ids, logits_to_keep=torch.tensor([0, 3])).logits, full.logits[:, [0, 3]])
        n = int((labels[:, 1:] != -100).sum())
        summed = model(ids, labels=labels, num_items_in_batch=2 * n).loss
        assert_close(summed, full.loss / 2, atol=1e-6)
        as_tuple = model(ids, labels=labels, return_dict=False, use_cache=False)
        assert isinstance(as_tuple, tuple) and len(as_tuple) == 2
        assert_close(as_tuple[1], full.logits)
        tt = torch.randint(0, VOCAB, ids.shape)
        assert_close(model(ids, token_type_ids=tt).logits, ref(ids, token_type_ids=tt).logits, what="token_type_ids")
        embeds = model.transformer.wte(ids)
        assert_close(model(inputs_embeds=embeds).logits, full.logits, what="inputs_embeds")
    with pytest.raises(TypeError, match="bogus"):
        model(ids, bogus=1)
    with pytest.raises(ValueError, match="input_ids and inputs_embeds"):
        model()


def test_sequence_classification_needs_pad_token_for_batches():
    cfg = GPT2Config(**{**CONFIG, "pad_token_id": None}, num_labels=2)
    model = GPT2ForSequenceClassification(cfg).eval()
    with pytest.raises(ValueError, match="pad_token_id"):
        model(torch.randint(3, VOCAB, (2, 5)))
    assert model(torch.randint(3, VOCAB, (1, 5))).logits.shape == (1, 2)


def test_conv1d_layout_and_reference():
    from transformers.pytorch_utils import Conv1D as HFConv1D

    ours, theirs = Conv1D(6, 4), HFConv1D(6, 4)
    assert ours.weight.shape == theirs.weight.shape == (4, 6) and ours.bias.shape == (6,)
    assert (ours.in_features, ours.out_features) == (4, 6)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, 4)
    assert_close(ours(x), theirs(x))
    assert_close(ours(x), torch.nn.functional.linear(x, ours.weight.T, ours.bias))
    with pytest.raises(ValueError, match="last dimension 4"):
        ours(torch.randn(2, 5))


def test_config_round_trip_and_scaling_options(tmp_path):
    cfg = GPT2Config(**CONFIG, scale_attn_by_inverse_layer_idx=True, reorder_and_upcast_attn=True, n_inner=40,
                     activation_function="gelu")
    ref = build_reference("GPT2LMHeadModel", "GPT2Config", tmp_path, attn_implementation="eager", **cfg.to_dict())
    loaded = json.loads((tmp_path / "config.json").read_text())
    assert loaded["scale_attn_by_inverse_layer_idx"] is True and loaded["n_inner"] == 40
    model = openformers.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager")
    ids, mask = random_batch(VOCAB)
    with torch.no_grad():
        assert_close(model(ids, attention_mask=mask).logits, ref(ids, attention_mask=mask).logits, mask=mask)
