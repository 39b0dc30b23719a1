"""Training on packed tokens (modules/packing.py): the real tokens of a padded batch alone go through
the per-token work; results, gradients and the dropout random stream are those of the padded run."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import openformers.models.bert as ob
from openformers.modules.packing import TokenPacking
from tests.models.packing_checks import Counter, assert_same_training, packed_and_padded
from tests.models.parity import assert_close, build_reference, random_batch

VOCAB = 99
TINY = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64)
PACKED = ["ForSequenceClassification", "ForTokenClassification", "ForMaskedLM"]  # nothing read at padding


def batch(head: str) -> dict[str, torch.Tensor]:
    """3 x 24 positions, 34 of them real: packed into 48 rows (34 real, 14 padding) of 72."""
    ids, mask = random_batch(VOCAB, batch=3, seq=24, pad_last=20)
    mask[0, 10:] = 0  # three rows of different lengths
    ids[mask == 0] = 0
    out = {"input_ids": ids, "attention_mask": mask}
    g = torch.Generator().manual_seed(2)
    if head == "ForSequenceClassification":
        out["labels"] = torch.tensor([0, 1, 1])
    elif head in ("ForTokenClassification", "ForMaskedLM"):
        labels = torch.randint(0, 2 if head == "ForTokenClassification" else VOCAB, ids.shape, generator=g)
        out["labels"] = labels.masked_fill(mask == 0, -100)
    elif head == "ForQuestionAnswering":
        out["start_positions"], out["end_positions"] = torch.tensor([1, 2, 0]), torch.tensor([3, 4, 2])
    assert TokenPacking.worth_it(mask).n_rows == 48
    return out


def objective(out, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    if out.get("loss") is not None:
        return out.loss
    return out.last_hidden_state[inputs["attention_mask"].bool()].square().sum()


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("head", PACKED)
def test_packed_training_equals_padded(head: str, checkpointing: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    config = ob.BertConfig(hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3, num_labels=2, **TINY)
    model = getattr(ob, "Bert" + head)(config).train()
    if checkpointing:
        model.gradient_checkpointing_enable()
    inputs = batch(head)
    mask = inputs["attention_mask"]
    results = packed_and_padded(model, inputs, monkeypatch, objective)
    (packed_out, packed_grads, packed_rng), (padded_out, padded_grads, padded_rng) = results
    assert torch.equal(packed_rng, padded_rng)  # the same dropout draws, in the same order
    for key, value in padded_out.items():
        if value is None or key in ("hidden_states", "attentions"):
            continue
        per_token = value.dim() >= 2 and value.shape[:2] == mask.shape
        assert_close(packed_out[key], value, atol=1e-6, mask=mask if per_token else None, what=key)
    assert packed_grads.keys() == padded_grads.keys()
    for name, grad in padded_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("head", ["Model", "ForQuestionAnswering", "ForTokenClassification", "ForSequenceClassification"])
def test_runs_padded_where_padding_positions_are_read(head: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bare encoder (its caller may read any position), question answering (its softmax runs over
    every position), token labels at padding positions, token heads in evaluation (their logits are
    returned everywhere), hidden states or attentions asked for: the padded computation, as
    transformers does it."""
    torch.manual_seed(0)
    model = getattr(ob, "Bert" + head)(ob.BertConfig(num_labels=2, **TINY)).train()
    inputs = batch(head)
    counter = Counter(monkeypatch)
    if head == "ForTokenClassification":
        model.eval()(**inputs)  # labels ignore the padding, but the logits there are returned
        model.train()
        inputs["labels"][inputs["attention_mask"] == 0] = 1
    if head == "ForSequenceClassification":
        model(**inputs, output_hidden_states=True)
        inputs["output_attentions"] = True
    model(**inputs)
    assert counter.packed == 0


def test_the_packed_encoder_leaves_padding_out() -> None:
    """Packed, the layers compute only the packed rows: the encoder's output is zero at the padding
    positions left out (38 of the 72 positions are padding; 14 of them fill the row count up)."""
    torch.manual_seed(0)
    model = ob.BertModel(ob.BertConfig(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **TINY)).train()
    inputs = batch("Model")
    mask = inputs["attention_mask"]
    packed = model(**inputs, _pad_free=True).last_hidden_state
    padded = model(**inputs).last_hidden_state
    assert_close(packed, padded, mask=mask, what="real tokens")
    left_out = (packed.abs().sum(-1) == 0)
    assert int(left_out.sum()) == 72 - 48 and not (left_out & mask.bool()).any()
    assert padded[mask == 0].abs().min() > 0


def test_packing_only_when_it_applies() -> None:
    right = torch.zeros(2, 40, dtype=torch.long)
    right[0, :40], right[1, :10] = 1, 1  # 50 real tokens of 80 -> 64 rows
    packing = TokenPacking.worth_it(right)
    assert packing is not None and packing.n_rows == 64
    x = torch.arange(80.0).view(2, 40, 1)
    packed = packing.pack(x).flatten()
    assert packed[:50].tolist() == list(range(50)) and packed[50:].tolist() == list(range(50, 64))  # then padding
    unpacked = packing.unpack(packing.pack(x)).flatten()
    assert unpacked[:64].tolist() == list(range(64)) and not unpacked[64:].any()
    assert TokenPacking.worth_it(torch.ones(2, 40, dtype=torch.long)) is None  # nothing padded
    assert TokenPacking.worth_it(torch.tensor([[1, 1, 1], [1, 1, 0]])) is None  # rounding up leaves nothing out
    assert TokenPacking.worth_it(None) is None
    # left padding: the first position, which the pooler reads, is padding in a row -> run padded
    assert TokenPacking.worth_it(right.flip(1)) is None


DISTIL = dict(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64)
REFERENCES = {
    "bert": ("Bert", dict(hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2, **TINY), 0),
    "roberta": ("Roberta", dict(hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2,
                                **{**TINY, "max_position_embeddings": 66}), 1),
    "distilbert": ("DistilBert", dict(dropout=0.2, attention_dropout=0.2, **DISTIL), 0),
}


@pytest.mark.parametrize("family", sorted(REFERENCES))
def test_training_loss_and_gradients_match_transformers(family: str, tmp_path: Path) -> None:
    """Train mode with dropout on a padded batch: transformers (padded) and ours (packed) agree,
    down to the dropout masks."""
    import importlib

    prefix, config, pad_id = REFERENCES[family]
    ref = build_reference(f"{prefix}ForSequenceClassification", f"{prefix}Config", tmp_path, attn_implementation="sdpa",
                          num_labels=2, **config)
    module = importlib.import_module(f"openformers.models.{family}")
    ours = getattr(module, f"{prefix}ForSequenceClassification").from_pretrained(tmp_path, attn_implementation="sdpa")
    ref.train(), ours.train()
    inputs = batch("ForSequenceClassification")
    inputs["input_ids"][inputs["attention_mask"] == 0] = pad_id
    results = []
    for model in (ours, ref):
        torch.manual_seed(3)
        loss = model(**inputs).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (loss, grads), (ref_loss, ref_grads) = results
    assert_close(loss, ref_loss, atol=1e-6, what="loss")
    for name, grad in ref_grads.items():
        assert_close(grads[name], grad, atol=1e-5, what=name)


@pytest.mark.parametrize("family", sorted(REFERENCES))
def test_sequence_classification_evaluates_packed_like_transformers(family: str, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Sequence classification returns nothing per token, so evaluation packs too (under no_grad,
    through the fused inference projections): the logits are transformers' padded ones."""
    import importlib

    prefix, config, pad_id = REFERENCES[family]
    ref = build_reference(f"{prefix}ForSequenceClassification", f"{prefix}Config", tmp_path, attn_implementation="sdpa",
                          num_labels=3, **config)
    module = importlib.import_module(f"openformers.models.{family}")
    ours = getattr(module, f"{prefix}ForSequenceClassification").from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    inputs = batch("Model")
    inputs["input_ids"][inputs["attention_mask"] == 0] = pad_id
    counter = Counter(monkeypatch)
    with torch.no_grad():
        logits = ours(**inputs).logits
        expected = ref(**inputs).logits
    assert counter.packed == 1
    assert_close(logits, expected, atol=1e-5, what=f"{family} logits")


def family_model(family: str, head: str):
    """A tiny RoBERTa or DistilBERT model with dropout on, and the pad id its inputs use."""
    if family == "roberta":
        import openformers.models.roberta as ro

        config = ro.RobertaConfig(hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3, num_labels=2,
                                  **{**TINY, "max_position_embeddings": 66})
        return getattr(ro, "Roberta" + head)(config), config.pad_token_id
    import openformers.models.distilbert as od

    config = od.DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64,
                                 dropout=0.3, attention_dropout=0.3, num_labels=2)
    return getattr(od, "DistilBert" + head)(config), 0


@pytest.mark.parametrize("family", ["roberta", "distilbert"])
@pytest.mark.parametrize("head", ["ForSequenceClassification", "ForMaskedLM", "ForTokenClassification"])
def test_other_families_pack_too(family: str, head: str, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model, pad_id = family_model(family, head)
    model.train()
    inputs = batch(head)
    inputs["input_ids"][inputs["attention_mask"] == 0] = pad_id
    assert_same_training(packed_and_padded(model, inputs, monkeypatch))


def test_distilbert_question_answering_runs_padded(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model, _ = family_model("distilbert", "ForQuestionAnswering")
    inputs = batch("ForQuestionAnswering")
    counter = Counter(monkeypatch)
    model.train()(**inputs)
    assert counter.packed == 0


def test_row_counts_come_in_few_sizes() -> None:
    """At most 16 row counts per doubling (kernels that build code per shape build few) and at most
    an eighth (or 15) more rows than real tokens."""
    from openformers.modules.packing import rounded_rows

    for k in range(4, 14):
        sizes = {rounded_rows(n, 10**9) for n in range(2**k, 2**(k + 1))}
        assert len(sizes) <= 16, k
    for n in range(1, 20000):
        rows = rounded_rows(n, 10**9)
        assert n <= rows <= n + max(15, n // 8), n
        assert rounded_rows(n, n) == n


@pytest.mark.parametrize("checkpointing", [False, True])
def test_lora_dropout_on_packed_rows_draws_the_padded_mask(checkpointing: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A LoRA adapter's dropout inside a packed layer draws the padded tensor's mask: the packed run
    is the padded run (loss, gradients, random stream), with and without gradient checkpointing."""
    from openformers.peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    config = ob.BertConfig(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, num_labels=2, **TINY)
    model = get_peft_model(ob.BertForSequenceClassification(config),
                           LoraConfig(r=4, lora_alpha=8, lora_dropout=0.3, target_modules=["query", "value", "dense"],
                                      task_type="SEQ_CLS"))
    if checkpointing:
        model.base_model.model.gradient_checkpointing_enable()
    model.train()
    inputs = batch("ForSequenceClassification")
    results = packed_and_padded(model, inputs, monkeypatch)
    assert any("lora_A" in n for n in results[1][1])
    assert_same_training(results)
