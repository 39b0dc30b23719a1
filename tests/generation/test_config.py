"""GenerationConfig: fields, defaults, file round trips (also with transformers), update and validation."""
from __future__ import annotations

import json

import pytest

from openformers.generation import GenerationConfig


def test_fields_default_to_unset_and_defaults_are_standard():
    cfg = GenerationConfig()
    assert cfg.max_length is None and cfg.do_sample is None and cfg.top_k is None
    d = GenerationConfig.default_values()
    assert d["max_length"] == 20 and d["top_k"] == 50 and d["top_p"] == 1.0 and d["num_beams"] == 1
    assert d["temperature"] == 1.0 and d["do_sample"] is False and d["length_penalty"] == 1.0


def test_save_and_load_round_trip(tmp_path):
    cfg = GenerationConfig(max_new_tokens=7, do_sample=True, top_p=0.9, eos_token_id=[2, 5], custom_field="x")
    cfg.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "generation_config.json").read_text())
    assert data == {"max_new_tokens": 7, "do_sample": True, "top_p": 0.9, "eos_token_id": [2, 5], "custom_field": "x"}
    back = GenerationConfig.from_pretrained(tmp_path)
    assert back == cfg and back.custom_field == "x"
    over, unused = GenerationConfig.from_pretrained(tmp_path, top_k=3, foo=1, return_unused_kwargs=True)
    assert over.top_k == 3 and unused == {"foo": 1}


def test_interoperates_with_transformers(tmp_path):
    import transformers

    theirs = transformers.GenerationConfig(max_new_tokens=9, num_beams=3, length_penalty=0.5, eos_token_id=[1, 2])
    theirs.save_pretrained(tmp_path / "a")
    ours = GenerationConfig.from_pretrained(tmp_path / "a")
    assert (ours.max_new_tokens, ours.num_beams, ours.length_penalty, ours.eos_token_id) == (9, 3, 0.5, [1, 2])
    ours.save_pretrained(tmp_path / "b")
    back = transformers.GenerationConfig.from_pretrained(tmp_path / "b")
    assert (back.max_new_tokens, back.num_beams, back.length_penalty, back.eos_token_id) == (9, 3, 0.5, [1, 2])


def test_update_returns_unused():
    cfg = GenerationConfig()
    unused = cfg.update(max_new_tokens=3, temperature=0.5, attention_mask="x")
    assert cfg.max_new_tokens == 3 and cfg.temperature == 0.5 and unused == {"attention_mask": "x"}
    cfg.update(defaults_only=True, max_new_tokens=10, top_k=5)
    assert cfg.max_new_tokens == 3 and cfg.top_k == 5


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.2), "top_p"),
        (dict(do_sample=True, temperature=0.0), "temperature"),
        (dict(do_sample=True, temperature=-1.0), "temperature"),
        (dict(num_beams=2, num_return_sequences=3), "num_return_sequences"),
        (dict(num_return_sequences=2), "num_return_sequences"),
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(top_k=-1), "top_k"),
        (dict(min_p=2.0), "min_p"),
        (dict(typical_p=0.0), "typical_p"),
        (dict(repetition_penalty=0.0), "repetition_penalty"),
        (dict(early_stopping="sometimes"), "early_stopping"),
        (dict(bad_words_ids=[1, 2]), "bad_words_ids"),
        (dict(num_beams=0), "num_beams"),
        (dict(cache_implementation="paged-whatever"), "cache_implementation"),
        (dict(epsilon_cutoff=1.0), "epsilon_cutoff"),
        (dict(stop_strings=[""]), "stop_strings"),
        (dict(streamer=object()), "streamer"),
    ],
)
def test_validation_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        GenerationConfig(**kwargs)
    if field != "streamer":  # update() hands arguments that are not fields back unused
        with pytest.raises(ValueError, match=field):
            GenerationConfig().update(**kwargs)


def test_valid_combinations():
    GenerationConfig(num_beams=4, num_return_sequences=4, early_stopping="never")
    GenerationConfig(do_sample=True, num_return_sequences=3, top_p=1.0, temperature=0.7)
    GenerationConfig(temperature=0.0)  # greedy: temperature is unused
    assert GenerationConfig(cache_implementation="hybrid").cache_implementation is None


def test_from_model(tmp_path):
    from openformers.core.config import PretrainedConfig

    mc = PretrainedConfig(bos_token_id=1, eos_token_id=[2, 3], pad_token_id=0)
    cfg = GenerationConfig.from_model(mc, tmp_path)  # no file: derived from the model config
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (1, [2, 3], 0)
    GenerationConfig(max_new_tokens=5, eos_token_id=7).save_pretrained(tmp_path)
    cfg = GenerationConfig.from_model(mc, tmp_path)
    assert cfg.max_new_tokens == 5 and cfg.eos_token_id == 7


def test_model_loads_and_saves_generation_config(llama, tmp_path):
    import transformers

    llama.ours.save_pretrained(tmp_path)
    ref = transformers.GenerationConfig.from_pretrained(tmp_path)
    assert ref.eos_token_id == llama.hf.generation_config.eos_token_id
    assert llama.ours.generation_config.bos_token_id == llama.hf.generation_config.bos_token_id
