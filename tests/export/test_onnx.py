"""ONNX export: onnxruntime gives PyTorch's outputs (1e-4) for MiniLM and a tiny random model of
every family; a decoder with past key values generates the same greedy tokens over onnxruntime;
pipelines give the same results on the ORT models."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from openformers import AutoTokenizer, embedded_model_path, pipeline  # noqa: E402
from openformers.cli.main import main as cli_main  # noqa: E402
from openformers.export import (  # noqa: E402
    ORTModelForCausalLM,
    ORTModelForFeatureExtraction,
    ORTModelForMaskedLM,
    ORTModelForQuestionAnswering,
    ORTModelForSequenceClassification,
    ORTModelForTokenClassification,
    to_onnx,
)
from openformers.export.onnx import auto_class  # noqa: E402
from openformers.models.auto import AutoConfig  # noqa: E402

VOCAB = 30522  # MiniLM's tokenizer drives every tiny model
LABELS = {"id2label": {0: "NEG", 1: "POS", 2: "OTHER"}, "label2id": {"NEG": 0, "POS": 1, "OTHER": 2}}
ENCODERS = {  # family -> (task, ORT class, config)
    "bert": ("fill-mask", ORTModelForMaskedLM, dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                    intermediate_size=37, max_position_embeddings=64)),
    "roberta": ("text-classification", ORTModelForSequenceClassification,
                dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                     max_position_embeddings=66, pad_token_id=1, type_vocab_size=1, **LABELS)),
    "xlm-roberta": ("question-answering", ORTModelForQuestionAnswering,
                    dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                         max_position_embeddings=514, pad_token_id=1, type_vocab_size=2)),
    "distilbert": ("token-classification", ORTModelForTokenClassification,
                   dict(dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64, **LABELS)),
}
DECODERS = {
    "gpt2": dict(n_embd=32, n_layer=2, n_head=4, n_positions=64),
    "llama": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=48, max_position_embeddings=64),
    "mistral": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                    intermediate_size=48, max_position_embeddings=64, sliding_window=6),
    "qwen2": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=48, max_position_embeddings=64),
}
TEXTS = ["Paris is the capital of France.", "ONNX graphs run on many runtimes, fast."]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(embedded_model_path("minilm"))


def _tiny(model_type: str, task: str, seed: int = 0, **config: object):
    from openformers.export.onnx import TASKS

    torch.manual_seed(seed)
    cfg = AutoConfig.for_model(model_type, vocab_size=VOCAB, **config)
    return auto_class(TASKS[task][0]).from_config(cfg).eval()


def _batch(tokenizer, texts=TEXTS):
    return tokenizer(texts, padding=True, return_tensors="pt")


def _close(ours: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor | None, what: str) -> None:
    assert ours.shape == ref.shape, what
    if mask is not None:
        ours, ref = ours[mask.bool()], ref[mask.bool()]
    diff = (ours - ref).abs().max().item()
    assert diff <= 1e-4, f"{what}: max abs diff {diff}"


def test_minilm_feature_extraction(tmp_path, tokenizer):
    out = to_onnx(embedded_model_path("minilm"), tmp_path / "minilm", task="feature-extraction")
    assert out.name == "model.onnx" and (tmp_path / "minilm" / "config.json").is_file()
    assert (tmp_path / "minilm" / "tokenizer.json").is_file()  # the tokenizer is saved beside
    ort_model = ORTModelForFeatureExtraction.from_pretrained(tmp_path / "minilm")
    torch_model = auto_class("base").from_pretrained(embedded_model_path("minilm")).eval()
    for texts in (TEXTS, TEXTS[:1], TEXTS * 3):  # dynamic batch and sequence axes
        batch = _batch(tokenizer, texts)
        with torch.no_grad():
            ref = torch_model(**batch).last_hidden_state
        _close(ort_model(**batch).last_hidden_state, ref, batch["attention_mask"], "MiniLM last_hidden_state")
    ort_pipe = pipeline("feature-extraction", model=ort_model, tokenizer=tokenizer, pooling="mean", normalize=True)
    torch_pipe = pipeline("feature-extraction", model=torch_model, tokenizer=tokenizer, pooling="mean", normalize=True)
    assert torch.allclose(torch.tensor(ort_pipe(TEXTS)), torch.tensor(torch_pipe(TEXTS)), atol=1e-5)


@pytest.mark.parametrize("family", sorted(ENCODERS))
def test_encoder_families(tmp_path, tokenizer, family, monkeypatch):
    task, ort_class, config = ENCODERS[family]
    model = _tiny(family, task, **config)
    src = tmp_path / "src"
    model.save_pretrained(src)
    tokenizer.save_pretrained(src)
    if family == "roberta":  # the command line path, from a tag of a local hub repository
        from openformers.hub import LocalHub

        hub = LocalHub(tmp_path / "hub")
        hub.upload_folder("acme/tiny-roberta", src)
        hub.create_tag("acme/tiny-roberta", "v1")
        monkeypatch.setenv("OPENFORMERS_HUB", str(hub.root))  # restored after the test (the command sets it)
        assert cli_main(["export", "onnx", "--model", "acme/tiny-roberta", "--revision", "v1", "--hub", str(hub.root),
                         "--task", task, str(tmp_path / "onnx")]) == 0
    else:
        to_onnx(model, tmp_path / "onnx", task=task, tokenizer=tokenizer)
    ort_model = ort_class.from_pretrained(tmp_path / "onnx")
    batch = _batch(tokenizer)
    inputs = {k: v for k, v in batch.items() if k != "token_type_ids" or family in ("bert", "xlm-roberta")}
    with torch.no_grad():
        ref = model(**inputs)
    ours = ort_model(**batch)
    for name in ort_class._outputs:
        per_token = ref[name].dim() >= 2 and ref[name].shape[1] == batch["input_ids"].shape[1]
        _close(ours[name], ref[name], batch["attention_mask"] if per_token else None, f"{family} {name}")

    pipe_task = {"fill-mask": "fill-mask", "text-classification": "text-classification",
                 "question-answering": "question-answering", "token-classification": "token-classification"}[task]
    on_ort = pipeline(pipe_task, model=ort_model, tokenizer=tokenizer)
    on_torch = pipeline(pipe_task, model=model, tokenizer=tokenizer)
    if task == "fill-mask":
        args: dict = {"inputs": f"Paris is the {tokenizer.mask_token} of France."}
    elif task == "question-answering":
        args = {"question": "What is the capital of France?", "context": TEXTS[0]}
    else:
        args = {"inputs": TEXTS}
    a, b = on_ort(**args), on_torch(**args)
    assert _rounded(a) == _rounded(b)


def _rounded(value):
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, float):
        return round(value, 4)
    return value


@pytest.mark.parametrize("family", sorted(DECODERS))
def test_decoder_with_past(tmp_path, tokenizer, family):
    model = _tiny(family, "text-generation-with-past", seed=1, **DECODERS[family])
    to_onnx(model, tmp_path, tokenizer=tokenizer)
    ort_model = ORTModelForCausalLM.from_pretrained(tmp_path)
    names = ort_model.input_names
    assert names[:3] == ["input_ids", "attention_mask", "position_ids"]
    assert "past_key_values.1.value" in names and "present.1.key" in ort_model.output_names

    tokenizer.padding_side = "left"
    batch = _batch(tokenizer)
    with pytest.raises(ValueError, match="takes no token_type_ids"):  # GPT-2 would add their embeddings
        ort_model(**batch)
    del batch["token_type_ids"]
    mask = batch["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        ref = model(input_ids=batch["input_ids"], attention_mask=mask, position_ids=positions)
    out = ort_model(input_ids=batch["input_ids"], attention_mask=mask, position_ids=positions)
    _close(out.logits, ref.logits, mask, f"{family} logits (prefill)")
    # one decode step on the cache each side returned
    step = torch.tensor([[7], [9]])
    mask2 = torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], dim=1)
    pos2 = positions[:, -1:] + 1
    with torch.no_grad():
        ref2 = model(input_ids=step, attention_mask=mask2, position_ids=pos2, past_key_values=ref.past_key_values)
    out2 = ort_model(input_ids=step, attention_mask=mask2, position_ids=pos2, past_key_values=out.past_key_values)
    _close(out2.logits, ref2.logits, None, f"{family} logits (decode step)")
    for (k, v), (rk, rv) in zip(out2.past_key_values, ref2.past_key_values):
        _close(k, rk, None, f"{family} present key")
        _close(v, rv, None, f"{family} present value")

    greedy = dict(max_new_tokens=12, do_sample=False)
    expected = model.generate(**batch, **greedy)
    assert torch.equal(ort_model.generate(**batch, **greedy), expected)
    if family == "llama":  # beam search and seeded sampling run over onnxruntime too (our generate, the ORT cache)
        for options in (dict(num_beams=3), dict(do_sample=True, top_k=50, temperature=0.8)):
            a = ort_model.generate(**batch, max_new_tokens=6, generator=torch.Generator().manual_seed(3), **options)
            b = model.generate(**batch, max_new_tokens=6, generator=torch.Generator().manual_seed(3), **options)
            assert torch.equal(a, b), options
        prompt = "The weather today is"
        a = pipeline("text-generation", model=ort_model, tokenizer=tokenizer)(prompt, **greedy)
        b = pipeline("text-generation", model=model, tokenizer=tokenizer)(prompt, **greedy)
        assert a == b


def test_errors_are_clear(tmp_path):
    model = _tiny("bert", "feature-extraction", hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=20)
    with pytest.raises(ValueError, match="unknown export task"):
        to_onnx(model, tmp_path, task="summarization")
    with pytest.raises(ValueError, match="needs a bert model with a causal-lm head"):
        to_onnx(model, tmp_path, task="text-generation-with-past")
    with pytest.raises(FileNotFoundError, match="export the model first"):
        ORTModelForFeatureExtraction.from_pretrained(_saved(model, tmp_path / "plain"))


def _saved(model, path: Path) -> Path:
    model.save_pretrained(path)
    return path
