"""from_pretrained takes the reference's loading keywords: no-ops are accepted, impossible ones explain."""
import pytest
import torch

import openformers as of
from openformers.core.loading_options import NO_OP_MODEL_KWARGS


@pytest.fixture(scope="module")
def minilm():
    return of.embedded_model_path("minilm")


def test_no_op_keywords_are_accepted(minilm):
    model = of.AutoModel.from_pretrained(minilm, **{k: None for k in NO_OP_MODEL_KWARGS})
    ids = torch.tensor([[101, 2023, 102]])
    plain = of.AutoModel.from_pretrained(minilm)
    torch.testing.assert_close(model(ids).last_hidden_state, plain(ids).last_hidden_state, rtol=0, atol=0)


def test_reference_no_op_list_is_covered(minilm):
    # the keywords transformers itself drops as unused must be accepted here too
    model = of.AutoModel.from_pretrained(minilm, mirror="x", _fast_init=True, low_cpu_mem_usage=True,
                                         offload_state_dict=True, use_safetensors=True, force_download=True,
                                         resume_download=True, proxies={}, offload_folder="/nonexistent")
    assert model.config.model_type == "bert"


def test_return_dict_false(minilm):
    model = of.AutoModel.from_pretrained(minilm, return_dict=False)
    out = model(torch.tensor([[101, 2023, 102]]))
    assert isinstance(out, tuple)


@pytest.mark.parametrize("flag", ["from_tf", "from_flax"])
def test_other_frameworks_explain(minilm, flag):
    with pytest.raises(ValueError, match=r"safetensors.*save_pretrained"):
        of.AutoModel.from_pretrained(minilm, **{flag: True})


def test_unknown_keyword_still_fails(minilm):
    with pytest.raises(TypeError, match="not_a_field_xyz"):
        of.AutoModel.from_pretrained(minilm, not_a_field_xyz=1)


def test_tokenizer_accepts_download_keywords(minilm):
    tok = of.AutoTokenizer.from_pretrained(minilm, use_fast=True, force_download=True, resume_download=True,
                                           proxies=None, mirror=None, _from_pipeline="x")
    assert tok("hello")["input_ids"][0] == 101


def test_config_keywords(minilm):
    import transformers

    config = of.AutoConfig.from_pretrained(minilm, resume_download=True, proxies=None, use_auth_token=None)
    assert "resume_download" not in config.to_dict()
    ours, unused = of.AutoConfig.from_pretrained(minilm, return_unused_kwargs=True, hidden_dropout_prob=0.3, foo=1)
    theirs, ref_unused = transformers.AutoConfig.from_pretrained(str(minilm), return_unused_kwargs=True,
                                                                  hidden_dropout_prob=0.3, foo=1)
    assert unused == ref_unused == {"foo": 1}
    assert ours.hidden_dropout_prob == theirs.hidden_dropout_prob == 0.3


def test_concrete_config_class_keywords(minilm):
    import transformers

    download = dict(resume_download=True, proxies=None, use_auth_token=None, force_download=True, mirror=None,
                    _from_auto=True, _commit_hash=None)
    config = of.BertConfig.from_pretrained(minilm, **download, hidden_dropout_prob=0.3)
    theirs = transformers.BertConfig.from_pretrained(str(minilm), **download, hidden_dropout_prob=0.3)
    assert config.hidden_dropout_prob == theirs.hidden_dropout_prob == 0.3
    assert not set(download) & set(config.to_dict())
    ours, unused = of.BertConfig.from_pretrained(minilm, return_unused_kwargs=True, hidden_dropout_prob=0.2, foo=1)
    theirs, ref_unused = transformers.BertConfig.from_pretrained(str(minilm), return_unused_kwargs=True,
                                                                 hidden_dropout_prob=0.2, foo=1)
    assert unused == ref_unused == {"foo": 1}
    assert ours.hidden_dropout_prob == theirs.hidden_dropout_prob == 0.2 and not hasattr(ours, "foo")
