"""The encoder runner (runtime/encoder.py): inference calls of BERT, RoBERTa and DistilBERT and their heads run on
the runtime's plan and give the forward's outputs; calls it does not cover run the forward; weight updates and
adapters are seen."""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

import openformers as of
from openformers.runtime import encoder
from openformers.runtime.dispatch import inference_runner
from tests.models.parity import assert_close, build_reference

VOCAB = 99
TINY = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=66)
DISTIL = dict(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=66)
FAMILIES = {"bert": ("Bert", TINY, 0), "roberta": ("Roberta", TINY, 1), "distilbert": ("DistilBert", DISTIL, 0)}
HEADS = ["Model", "ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering", "ForMaskedLM"]


def model_of(family: str, head: str, **config_kw) -> torch.nn.Module:
    prefix, tiny, _ = FAMILIES[family]
    module = importlib.import_module(f"openformers.models.{family}")
    torch.manual_seed(0)
    config = getattr(module, f"{prefix}Config")(num_labels=2, **tiny, **config_kw)
    return getattr(module, prefix + head)(config).eval()


def batch(pad_id: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """3 x 40 ids: one row whole, one of 20 and one of 5 real tokens."""
    ids = torch.randint(3, VOCAB, (3, 40), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 20:], mask[2, 5:] = 0, 0
    if left:
        mask = mask.flip(1)
    ids[mask == 0] = pad_id
    return ids, mask


def runs_on_the_plan(model: torch.nn.Module, **kwargs) -> bool:
    return inference_runner(model, (), kwargs) is not None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_plan_gives_the_forward_outputs(family: str, head: str, dtype: torch.dtype) -> None:
    model = model_of(family, head).to(dtype)
    ids, mask = batch(FAMILIES[family][2])
    expected = model(input_ids=ids, attention_mask=mask)  # autograd records: the forward, module by module
    with torch.inference_mode():
        # a head that reads every position calls its base model, which runs on the plan
        assert runs_on_the_plan(model if head in ("Model", "ForSequenceClassification") else model.base_model,
                                input_ids=ids, attention_mask=mask)
        got = model(input_ids=ids, attention_mask=mask)
        as_tuple = model(input_ids=ids, attention_mask=mask, return_dict=False)
    assert type(got) is type(expected) and list(got.keys()) == list(expected.keys())
    assert len(as_tuple) == len(expected.to_tuple())
    atol = 1e-5 if dtype == torch.float32 else 0.05
    for key in expected.keys():
        per_token = key != "pooler_output" and expected[key].dim() >= 2 and expected[key].shape[:2] == mask.shape
        # padding positions: the same too, except under heads that read the first position alone
        assert_close(got[key], expected[key].detach(), atol=atol, what=key)
        if per_token:
            assert_close(got[key], expected[key].detach(), atol=atol, mask=mask, what=key)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("head", ["Model", "ForSequenceClassification"])
def test_without_the_native_attention_sdpa_gives_the_same(head: str, dtype: torch.dtype,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from openformers.runtime import attention_native

    if attention_native.available(torch.zeros(1, dtype=dtype)) is False:
        pytest.skip("the native encoder attention is not built here: both calls would be SDPA")
    model = model_of("bert", head).to(dtype)
    ids, mask = batch(0)
    expected = model(input_ids=ids, attention_mask=mask)[0].detach()
    calls = []
    real = attention_native.encoder_attention
    monkeypatch.setattr(attention_native, "encoder_attention", lambda *a: (calls.append(1), real(*a))[1])
    with torch.inference_mode():
        native = model(input_ids=ids, attention_mask=mask)[0]
        ran_native = len(calls)
        monkeypatch.setattr(attention_native, "available", lambda x: False)
        sdpa = model(input_ids=ids, attention_mask=mask)[0]
    assert ran_native > 0 and len(calls) == ran_native  # the first call on the native attention, the second not
    atol = 1e-5 if dtype == torch.float32 else 0.05
    for got in (native, sdpa):
        assert_close(got, expected, atol=atol, mask=mask if head == "Model" else None, what=head)


@pytest.mark.parametrize("left", [False, True], ids=["right", "left"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_sequence_classification_matches_transformers(family: str, left: bool, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a head that reads the first position alone, the plan runs the real tokens only (right padding;
    with left padding the first position is padding in a row, so it runs padded) and the last layer at the
    first position: the logits are transformers' padded ones."""
    prefix, tiny, pad_id = FAMILIES[family]
    ref = build_reference(f"{prefix}ForSequenceClassification", f"{prefix}Config", tmp_path, attn_implementation="sdpa",
                          num_labels=3, **tiny)
    module = importlib.import_module(f"openformers.models.{family}")
    ours = getattr(module, f"{prefix}ForSequenceClassification").from_pretrained(tmp_path).eval()
    ids, mask = batch(pad_id, left)
    packed = []
    original = encoder._Rows.worth_it

    def counting(attention_mask):
        rows = original(attention_mask)
        packed.append(rows is not None)
        return rows
    monkeypatch.setattr(encoder._Rows, "worth_it", staticmethod(counting))
    with torch.no_grad():
        logits = ours(input_ids=ids, attention_mask=mask).logits
        expected = ref(input_ids=ids, attention_mask=mask).logits
    assert packed == [not left]
    assert_close(logits, expected, atol=1e-5, what=f"{family} logits")


def test_calls_it_does_not_cover_run_the_forward() -> None:
    model = model_of("bert", "Model")
    ids, mask = batch(0)
    assert runs_on_the_plan(model, input_ids=ids, attention_mask=mask)
    assert not runs_on_the_plan(model, input_ids=ids, output_hidden_states=True)
    assert not runs_on_the_plan(model, input_ids=ids, output_attentions=True)
    assert not runs_on_the_plan(model, input_ids=ids, not_an_argument=torch.ones(1))
    model.train()
    assert not runs_on_the_plan(model, input_ids=ids)
    model.eval()
    handle = model.encoder.layer[1].intermediate.register_forward_hook(lambda *a: None)
    assert not runs_on_the_plan(model, input_ids=ids)
    handle.remove()
    handle = torch.nn.modules.module.register_module_forward_hook(lambda *a: None)
    try:
        assert not runs_on_the_plan(model, input_ids=ids)
    finally:
        handle.remove()
    assert runs_on_the_plan(model, input_ids=ids)
    eager = model_of("bert", "Model", attn_implementation="eager")
    assert not runs_on_the_plan(eager, input_ids=ids)
    heads = model_of("distilbert", "ForSequenceClassification")
    heads.config.output_hidden_states = True  # the config's flag counts as asked for
    assert not runs_on_the_plan(heads.distilbert, input_ids=ids)

    class Changed(of.BertModel):  # a forward of its own, no description of its own
        def forward(self, *args, **kwargs):
            return super().forward(*args, **kwargs)
    assert not runs_on_the_plan(Changed(model.config).eval(), input_ids=ids)


def test_weight_updates_and_adapters_are_seen() -> None:
    from openformers.peft import LoraConfig, get_peft_model

    model = model_of("bert", "ForSequenceClassification")
    ids, mask = batch(0)

    def check(m: torch.nn.Module, what: str) -> torch.Tensor:
        expected = m(input_ids=ids, attention_mask=mask)[0].detach()
        with torch.no_grad():
            got = m(input_ids=ids, attention_mask=mask)[0]
        assert_close(got, expected, atol=1e-5, what=what)
        return got

    before = check(model.bert, "first call")
    with torch.no_grad():
        model.bert.encoder.layer[0].attention.self.key.weight.mul_(2.0)  # in place
        model.bert.encoder.layer[1].output.dense.bias.add_(torch.randn(32))
    after = check(model.bert, "after an update in place")
    assert (after - before).abs().max() > 1e-3
    layer = model.bert.encoder.layer[1].intermediate.dense
    layer.weight = torch.nn.Parameter(layer.weight.detach() * 0.5)  # replaced
    check(model.bert, "after a replaced weight")
    check(model, "the head after a replaced weight")
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], task_type="SEQ_CLS"))
    for name, p in peft.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p)
    assert not runs_on_the_plan(peft.base_model.model.bert, input_ids=ids)
    check(peft, "with LoRA adapters")


@pytest.mark.parametrize("where", ["model", "base"])
def test_a_forward_replaced_on_the_instance_is_called(where: str) -> None:
    """``model.forward = f`` (as wrappers do) is what ``model(...)`` runs, in inference and in training alike: the
    runtime's runners step aside for it."""
    model = model_of("bert", "ForSequenceClassification")
    ids, mask = batch(0)
    target = model if where == "model" else model.bert
    original, calls = target.forward, []
    target.forward = lambda *a, **k: (calls.append(torch.is_grad_enabled()), original(*a, **k))[1]
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    model.train()
    model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 1, 0])).loss.backward()
    assert calls == [False, True]
