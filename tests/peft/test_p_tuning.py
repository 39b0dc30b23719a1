"""P-tuning (PromptEncoderConfig): trains, saves in peft's layout and matches peft's outputs on load."""
import pytest
import torch

import openformers as of
from openformers.peft import PeftModel, PromptEncoderConfig, get_peft_config, get_peft_model


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("llama")
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, num_key_value_heads=2)).save_pretrained(path)
    return path


@pytest.mark.parametrize("kind", ["MLP", "LSTM"])
def test_p_tuning_matches_peft(tiny_llama, tmp_path, kind):
    import peft
    from transformers import LlamaForCausalLM

    config = get_peft_config({"peft_type": "P_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": 4,
                              "encoder_hidden_size": 8, "encoder_reparameterization_type": kind})
    assert isinstance(config, PromptEncoderConfig)
    model = get_peft_model(of.AutoModelForCausalLM.from_pretrained(tiny_llama), config)
    reference = peft.get_peft_model(LlamaForCausalLM.from_pretrained(tiny_llama), peft.get_peft_config(
        {"peft_type": "P_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": 4, "encoder_hidden_size": 8,
         "encoder_reparameterization_type": kind}))
    ours = {n: p.shape for n, p in model.named_parameters() if p.requires_grad}
    theirs = {n: p.shape for n, p in reference.named_parameters() if p.requires_grad}
    assert ours == theirs
    ids = torch.randint(0, 64, (2, 5))
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    assert model.prompt_encoder["default"].embedding.weight.grad is not None
    model.save_pretrained(tmp_path)
    loaded = peft.PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(tiny_llama), tmp_path).eval()
    mine = PeftModel.from_pretrained(of.AutoModelForCausalLM.from_pretrained(tiny_llama), tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(mine(input_ids=ids).logits, loaded(input_ids=ids).logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(mine(input_ids=ids).logits, model.eval()(input_ids=ids).logits, rtol=1e-5, atol=1e-5)


def test_bad_reparameterization_type():
    with pytest.raises(ValueError, match="MLP' or 'LSTM"):
        PromptEncoderConfig(num_virtual_tokens=2, encoder_reparameterization_type="GRU")
