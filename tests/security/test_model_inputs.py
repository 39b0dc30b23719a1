"""Bad ``input_ids`` given to a model's own forward: a clear error naming the argument and the fix
(``core/inputs.py``, checked in ``PreTrainedModel.__call__`` for every family), never a bare
IndexError or reshape error from deep inside a layer."""
from __future__ import annotations

import pytest
import torch


def _llama():
    from openformers.models.llama import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64))


def _gpt2():
    from openformers.models.gpt2 import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2, n_positions=32))


def _bert():
    from openformers.models.bert import BertConfig, BertForSequenceClassification

    return BertForSequenceClassification(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=32))


def _distilbert():
    from openformers.models.distilbert import DistilBertConfig, DistilBertModel

    return DistilBertModel(DistilBertConfig(vocab_size=64, dim=16, n_layers=1, n_heads=2, hidden_dim=32))


def _roberta():
    from openformers.models.roberta import RobertaConfig, RobertaModel

    return RobertaModel(RobertaConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=32))


FAMILIES = {"llama": _llama, "gpt2": _gpt2, "bert": _bert, "distilbert": _distilbert, "roberta": _roberta}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def model(request):
    torch.manual_seed(0)
    return FAMILIES[request.param]().eval()


@pytest.fixture(params=[True, False], ids=["grad", "no_grad"])
def grad(request):
    with torch.set_grad_enabled(request.param):
        yield request.param


def test_one_dimensional_input_ids_say_to_add_the_batch_dimension(model, grad):
    with pytest.raises(ValueError, match=r"input_ids has shape \(3,\).*\[batch, length\].*input_ids\[None\].*unsqueeze\(0\)"):
        model(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"input_ids has shape \(\)"):
        model(input_ids=torch.tensor(5))
    assert model(torch.tensor([1, 2, 3])[None]) is not None


def test_three_dimensional_input_ids_are_refused_where_the_family_does_not_read_them(model, grad):
    ids = torch.tensor([[[1, 2, 3]], [[4, 5, 6]]])  # [2, 1, 3]
    if type(model).accepts_leading_dims:  # GPT-2 flattens leading dimensions, as transformers' GPT-2 does
        out = model(ids)
        assert out.logits.shape[:3] == (2, 1, 3)
        return
    with pytest.raises(ValueError, match=r"input_ids has shape \(2, 1, 3\).*\[batch, length\].*reshape\(-1, "):
        model(ids)


@pytest.mark.parametrize("shape", [(0, 3), (2, 0)])
def test_empty_batch_is_refused(model, grad, shape):
    with pytest.raises(ValueError, match=rf"input_ids has shape \({shape[0]}, {shape[1]}\): an empty batch"):
        model(torch.zeros(shape, dtype=torch.long))


@pytest.mark.parametrize("bad", [-1, 64, 10**6])
def test_token_ids_outside_the_vocabulary_are_refused(model, grad, bad):
    with pytest.raises(ValueError, match=rf"input_ids holds the token id {bad}, outside the model's vocabulary of 64 ids "
                                         r"\(0 to 63\); encode the text with this model's tokenizer"):
        model(input_ids=torch.tensor([[1, 2], [3, bad]]))


def test_wrong_types_name_input_ids(model):
    with pytest.raises(TypeError, match="input_ids must be a torch.Tensor.*got a list.*torch.tensor"):
        model([[1, 2, 3]])
    with pytest.raises(ValueError, match=r"input_ids holds torch.float32 values.*input_ids.long\(\)"):
        model(torch.tensor([[1.0, 2.0]]))


def test_resized_embedding_sets_the_bound():
    model = _llama().eval()
    with pytest.raises(ValueError, match="vocabulary of 64 ids"):
        model(torch.tensor([[70]]))
    model.resize_token_embeddings(72)
    assert model(torch.tensor([[70]])).logits.shape == (1, 1, 72)


def test_traced_and_compiled_calls_skip_the_value_check_but_keep_the_shape_check():
    from openformers.core.inputs import check_token_ids

    seen = []

    def traced(ids):
        check_token_ids(ids, 4)
        seen.append(1)
        return ids * 2

    assert torch.jit.trace(traced, torch.tensor([[9, 9]]), check_trace=False)(torch.tensor([[1, 2]])).tolist() == [[2, 4]]
    with pytest.raises(ValueError, match=r"\(2,\)"):
        torch.jit.trace(traced, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="token id 9"):
        traced(torch.tensor([[9]]))
