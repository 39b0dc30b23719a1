"""BERT: parity with transformers on tiny random models, checkpoint compatibility, heads and losses."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import openformers.models.bert as ob
from tests.models.parity import assert_close, build_reference, random_batch

transformers = pytest.importorskip("transformers")

VOCAB = 99
TINY = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64)
HEADS = ["Model", "ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering", "ForMaskedLM"]
PER_TOKEN = ("last_hidden_state", "logits", "start_logits", "end_logits")


def compare_outputs(ours, theirs, mask: torch.Tensor, per_token: bool, what: str = "") -> None:
    """Every field ours returns must match; per-token fields only on real (unpadded) tokens."""
    for key in ours.keys():
        a, b = ours[key], theirs[key]
        if key in ("hidden_states", "attentions"):
            assert len(a) == len(b), f"{what} {key}: {len(a)} != {len(b)}"
            for i, (x, y) in enumerate(zip(a, b)):
                assert_close(x, y, mask=mask if key == "hidden_states" else None, what=f"{what} {key}[{i}]")
        elif key == "loss":
            assert_close(a, b, what=f"{what} loss")
        else:
            use_mask = mask if (per_token and key in PER_TOKEN and a.dim() >= 2 and a.shape[:2] == mask.shape) else None
            assert_close(a, b, mask=use_mask, what=f"{what} {key}")


def check_family_parity(module, prefix: str, config_name: str, head: str, attn: str, tmp_path: Path, config_kw: dict,
                        pad_id: int = 0, with_token_types: bool = True) -> None:
    name = prefix + head
    ref = build_reference(name, config_name, tmp_path, attn_implementation=attn, **config_kw)
    ours, info = getattr(module, name).from_pretrained(tmp_path, output_loading_info=True, attn_implementation=attn)
    assert not any(info.values()), info
    ids, mask = random_batch(config_kw["vocab_size"], batch=3, seq=9, pad_last=3)
    ids[mask == 0] = pad_id
    kw = dict(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=attn == "eager")
    if with_token_types:
        kw["token_type_ids"] = torch.randint(0, 2, ids.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs, mine = ref(**kw), ours(**kw)
    compare_outputs(mine, theirs, mask, per_token=True, what=f"{name}[{attn}]")


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("head", HEADS)
def test_parity(head: str, attn: str, tmp_path: Path) -> None:
    check_family_parity(ob, "Bert", "BertConfig", head, attn, tmp_path, TINY)


@pytest.mark.parametrize("act", ["gelu", "gelu_new", "relu", "silu", "swish", "gelu_pytorch_tanh"])
def test_activations(act: str, tmp_path: Path) -> None:
    ref = build_reference("BertForMaskedLM", "BertConfig", tmp_path, hidden_act=act, **TINY)
    ours = ob.BertForMaskedLM.from_pretrained(tmp_path)
    ids, mask = random_batch(VOCAB)
    with torch.no_grad():
        assert_close(ours(ids, mask).logits, ref(input_ids=ids, attention_mask=mask).logits, mask=mask, what=act)


def test_config_defaults_and_round_trip(tmp_path: Path) -> None:
    c = ob.BertConfig()
    theirs = transformers.BertConfig()
    for field in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                  "hidden_act", "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "pad_token_id",
                  "hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"):
        assert getattr(c, field) == getattr(theirs, field), field
    assert c.position_embedding_type == "absolute"
    c2 = ob.BertConfig(hidden_size=64, num_attention_heads=8, num_labels=3)
    c2.save_pretrained(tmp_path)
    back = ob.BertConfig.from_pretrained(tmp_path)
    assert back.hidden_size == 64 and back.num_labels == 3
    assert transformers.BertConfig.from_pretrained(tmp_path).hidden_size == 64
    with pytest.raises(ValueError, match="multiple"):
        ob.BertConfig(hidden_size=30, num_attention_heads=4)


def test_defaults_for_token_types_and_positions(tmp_path: Path) -> None:
    build_reference("BertModel", "BertConfig", tmp_path, **TINY)
    model = ob.BertModel.from_pretrained(tmp_path)
    ids, mask = random_batch(VOCAB)
    with torch.no_grad():
        a = model(ids, mask).last_hidden_state
        b = model(ids, mask, token_type_ids=torch.zeros_like(ids), position_ids=torch.arange(ids.shape[1])[None]).last_hidden_state
    assert_close(a, b, atol=0, what="defaults")


def test_legacy_transformers4_checkpoint(tmp_path: Path) -> None:
    """gamma/beta LayerNorm names, cls.predictions.decoder.bias and the position_ids buffer load."""
    ref = build_reference("BertForMaskedLM", "BertConfig", tmp_path / "ref", **TINY)
    from safetensors.torch import save_file

    legacy = {}
    for name, t in ref.state_dict().items():
        name = name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        legacy[name] = t.detach().clone().contiguous()
    legacy["cls.predictions.decoder.bias"] = legacy.pop("cls.predictions.bias")
    legacy.pop("cls.predictions.decoder.weight", None)
    legacy["bert.embeddings.position_ids"] = torch.arange(TINY["max_position_embeddings"])[None]
    legacy["cls.seq_relationship.weight"] = torch.zeros(2, TINY["hidden_size"])  # pre-training NSP head
    out = tmp_path / "legacy"
    out.mkdir()
    save_file(legacy, out / "model.safetensors")
    cfg = json.loads((tmp_path / "ref" / "config.json").read_text())
    cfg["transformers_version"] = "4.8.2"
    (out / "config.json").write_text(json.dumps(cfg))
    model, info = ob.BertForMaskedLM.from_pretrained(out, output_loading_info=True)
    assert info["missing_keys"] == [] and info["mismatched_keys"] == []
    assert info["unexpected_keys"] == []  # the NSP head is ignored on purpose
    ids, mask = random_batch(VOCAB)
    with torch.no_grad():
        assert_close(model(ids, mask).logits, ref(input_ids=ids, attention_mask=mask).logits, mask=mask, what="legacy")
    # a base model from the same file: the MLM file has no pooler, so only that is new
    base, info = ob.BertModel.from_pretrained(out, output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["pooler.dense.bias", "pooler.dense.weight"]


def test_save_load_round_trip_and_tied_decoder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ob.BertForMaskedLM(ob.BertConfig(**TINY)).eval()
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    with torch.no_grad():
        model.cls.predictions.decoder.bias.normal_()
    model.save_pretrained(tmp_path)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "cls.predictions.bias" in keys and "cls.predictions.decoder.weight" not in keys
    ids, mask = random_batch(VOCAB)
    again = ob.BertForMaskedLM.from_pretrained(tmp_path)
    assert again.cls.predictions.decoder.weight is again.bert.embeddings.word_embeddings.weight
    theirs = transformers.BertForMaskedLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        expected = model(ids, mask).logits
        assert_close(again(ids, mask).logits, expected, atol=0, what="round trip")
        assert_close(theirs(input_ids=ids, attention_mask=mask).logits, expected, mask=mask, what="transformers reads ours")


def test_resize_token_embeddings() -> None:
    model = ob.BertForMaskedLM(ob.BertConfig(**TINY))
    model.resize_token_embeddings(VOCAB + 5)
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert model.cls.predictions.decoder.bias.shape == (VOCAB + 5,)
    ids, mask = random_batch(VOCAB + 5)
    assert model(ids, mask).logits.shape[-1] == VOCAB + 5


@pytest.mark.parametrize(
    "num_labels,labels",
    [
        (1, torch.tensor([0.5, -1.0, 2.0])),  # regression
        (3, torch.tensor([0, 2, 1])),  # single label
        (3, torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])),  # multi label
    ],
)
def test_sequence_classification_losses(num_labels: int, labels: torch.Tensor, tmp_path: Path) -> None:
    ref = build_reference("BertForSequenceClassification", "BertConfig", tmp_path, num_labels=num_labels, **TINY)
    ours = ob.BertForSequenceClassification.from_pretrained(tmp_path)
    ids, mask = random_batch(VOCAB, batch=3)
    with torch.no_grad():
        a = ours(ids, mask, labels=labels)
        b = ref(input_ids=ids, attention_mask=mask, labels=labels)
    assert_close(a.loss, b.loss, what="loss")
    assert ours.config.problem_type == ref.config.problem_type


def test_other_losses(tmp_path: Path) -> None:
    ids, mask = random_batch(VOCAB, batch=3)
    labels = torch.randint(0, 3, ids.shape)
    labels[mask == 0] = -100
    ref = build_reference("BertForTokenClassification", "BertConfig", tmp_path / "tok", num_labels=3, **TINY)
    ours = ob.BertForTokenClassification.from_pretrained(tmp_path / "tok")
    with torch.no_grad():
        assert_close(ours(ids, mask, labels=labels).loss, ref(input_ids=ids, attention_mask=mask, labels=labels).loss)
    ref = build_reference("BertForQuestionAnswering", "BertConfig", tmp_path / "qa", **TINY)
    ours = ob.BertForQuestionAnswering.from_pretrained(tmp_path / "qa")
    pos = dict(start_positions=torch.tensor([1, 2, 30]), end_positions=torch.tensor([3, 4, 5]))
    with torch.no_grad():
        assert_close(ours(ids, mask, **pos).loss, ref(input_ids=ids, attention_mask=mask, **pos).loss)
    ref = build_reference("BertForMaskedLM", "BertConfig", tmp_path / "mlm", **TINY)
    ours = ob.BertForMaskedLM.from_pretrained(tmp_path / "mlm")
    mlm = torch.full_like(ids, -100)
    mlm[:, 2] = ids[:, 2]
    with torch.no_grad():
        assert_close(ours(ids, mask, labels=mlm).loss, ref(input_ids=ids, attention_mask=mask, labels=mlm).loss)


def test_return_dict_false_and_config_flags() -> None:
    torch.manual_seed(0)
    model = ob.BertForSequenceClassification(ob.BertConfig(**TINY)).eval()
    ids, mask = random_batch(VOCAB)
    out = model(ids, mask, labels=torch.tensor([0, 1]), return_dict=False, output_hidden_states=True)
    assert isinstance(out, tuple) and len(out) == 3  # loss, logits, hidden_states
    assert len(out[2]) == TINY["num_hidden_layers"] + 1
    model.config.output_attentions = True
    assert len(model(ids, mask).attentions) == TINY["num_hidden_layers"]
    base = ob.BertModel(ob.BertConfig(**TINY), add_pooling_layer=False)
    assert base.pooler is None and base(ids).pooler_output is None


def test_padding_does_not_change_real_tokens() -> None:
    torch.manual_seed(0)
    model = ob.BertModel(ob.BertConfig(**TINY)).eval()
    ids = torch.randint(3, VOCAB, (1, 6))
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], 1)
    mask = torch.tensor([[1] * 6 + [0] * 3])
    with torch.no_grad():
        assert_close(model(padded, mask).last_hidden_state[:, :6], model(ids).last_hidden_state, what="padding")


def test_sdpa_matches_eager() -> None:
    torch.manual_seed(0)
    config = ob.BertConfig(**TINY)
    model = ob.BertForMaskedLM(config).eval()
    ids, mask = random_batch(VOCAB)
    with torch.no_grad():
        config.attn_implementation = "eager"
        a = model(ids, mask).logits
        config.attn_implementation = "sdpa"
        b = model(ids, mask).logits
    assert_close(a, b, mask=mask, what="sdpa vs eager")


def test_gradient_checkpointing_same_gradients() -> None:
    torch.manual_seed(0)
    model = ob.BertForSequenceClassification(ob.BertConfig(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **TINY))
    model.train()
    ids, mask = random_batch(VOCAB)
    labels = torch.tensor([0, 1])

    def grads() -> dict[str, torch.Tensor]:
        model.zero_grad()
        model(ids, mask, labels=labels).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    ckpt = grads()
    assert plain.keys() == ckpt.keys()
    for name in plain:
        assert_close(ckpt[name], plain[name], atol=1e-6, what=name)


def test_auto_classes(tmp_path: Path) -> None:
    import openformers

    build_reference("BertForSequenceClassification", "BertConfig", tmp_path, num_labels=4, **TINY)
    assert isinstance(openformers.AutoModel.from_pretrained(tmp_path), ob.BertModel)
    model = openformers.AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert isinstance(model, ob.BertForSequenceClassification) and model.config.num_labels == 4
    assert isinstance(openformers.AutoModelForMaskedLM.from_config(ob.BertConfig(**TINY)), ob.BertForMaskedLM)
    assert isinstance(openformers.AutoConfig.for_model("bert"), ob.BertConfig)


def test_fused_qkv_inference_matches_and_tracks_weight_updates() -> None:
    torch.manual_seed(0)
    model = ob.BertModel(ob.BertConfig(**TINY)).eval()
    ids, mask = random_batch(VOCAB)
    expected = model(ids, mask).last_hidden_state.detach()  # grad enabled: three separate projections
    with torch.inference_mode():
        assert_close(model(ids, mask).last_hidden_state, expected, atol=1e-6, what="fused")
    with torch.no_grad():
        model.encoder.layer[0].attention.self.key.weight.mul_(2.0)  # in place: the fused cache must notice
    changed = model(ids, mask).last_hidden_state.detach()
    with torch.no_grad():
        assert_close(model(ids, mask).last_hidden_state, changed, atol=1e-6, what="after update")
    model.to(torch.float64)
    with torch.no_grad():
        assert model(ids, mask).last_hidden_state.dtype == torch.float64
