"""The model base and file resolution: config.json, directories, the Hugging Face cache layout,
offline mode, shards, ``.bin`` files, dtypes, bad input and peak memory while loading."""
from __future__ import annotations

import json
import logging
import os
import pickle
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import openformers
from openformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification
from openformers.core.checkpoint import CheckpointError
from openformers.core.hub import ModelNotFoundError
from openformers.models.gpt2 import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel, GPT2Model
from tests.hub_cache import make_hub_cache

TINY = dict(vocab_size=64, n_embd=16, n_layer=2, n_head=2, n_positions=32, bos_token_id=1, eos_token_id=2, pad_token_id=0)
IDS = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 13, 14]])
REPO_ROOT = Path(__file__).resolve().parents[2]


def _model(cls=GPT2LMHeadModel, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return cls(GPT2Config(**{**TINY, **overrides})).eval()


def _logits(model, ids=IDS):
    with torch.no_grad():
        out = model(ids)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _same(a, b) -> None:
    torch.testing.assert_close(_logits(a), _logits(b), rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_gpt2")
    model = _model()
    model.save_pretrained(path)
    return path, model


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection is recorded and fails."""
    calls: list[object] = []

    def refuse(self, address, *args, **kwargs):
        calls.append(address)
        raise OSError(f"network access attempted: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return calls


# -- config.json -----------------------------------------------------------------------------
def test_config_round_trip_keeps_unknown_keys(tmp_path):
    cfg = GPT2Config(**TINY, my_custom_field={"a": [1, 2]}, another=3.5)
    cfg.save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["model_type"] == "gpt2" and raw["my_custom_field"] == {"a": [1, 2]} and raw["another"] == 3.5
    for loaded in (GPT2Config.from_pretrained(tmp_path), AutoConfig.from_pretrained(tmp_path),
                   AutoConfig.from_pretrained(tmp_path / "config.json")):
        assert isinstance(loaded, GPT2Config)
        assert loaded.my_custom_field == {"a": [1, 2]} and loaded.another == 3.5
        assert loaded.n_embd == 16 and loaded.hidden_size == 16
        assert loaded == cfg
    # a key written by another tool survives load + save
    raw["written_elsewhere"] = "kept"
    (tmp_path / "config.json").write_text(json.dumps(raw))
    AutoConfig.from_pretrained(tmp_path).save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text())["written_elsewhere"] == "kept"


def test_labels_round_trip(tmp_path):
    cfg = GPT2Config(**TINY, id2label={0: "neg", 1: "neu", 2: "pos"})
    assert cfg.num_labels == 3 and cfg.label2id == {"neg": 0, "neu": 1, "pos": 2}
    cfg.save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["id2label"] == {"0": "neg", "1": "neu", "2": "pos"}
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert loaded.id2label == {0: "neg", 1: "neu", 2: "pos"} and loaded.label2id["pos"] == 2
    assert loaded.num_labels == 3
    assert GPT2Config(num_labels=4).id2label == {i: f"LABEL_{i}" for i in range(4)}
    reheaded = AutoConfig.from_pretrained(tmp_path, num_labels=5)
    assert reheaded.num_labels == 5 and len(reheaded.label2id) == 5
    # transformers reads what we write
    transformers = pytest.importorskip("transformers")
    theirs = transformers.AutoConfig.from_pretrained(tmp_path)
    assert theirs.id2label == loaded.id2label and theirs.num_labels == 3


def test_autoconfig_for_model():
    cfg = AutoConfig.for_model("gpt2", n_embd=24, n_head=3, num_labels=3)
    assert isinstance(cfg, GPT2Config) and cfg.n_embd == 24 and cfg.num_labels == 3
    with pytest.raises(ValueError, match="Supported model types") as err:
        AutoConfig.for_model("not-a-model")
    assert "gpt2" in str(err.value)


def test_causal_lm_built_directly_has_a_generation_config(tmp_path):
    from openformers.generation import GenerationConfig

    model = _model()
    assert isinstance(model.generation_config, GenerationConfig)
    assert (model.generation_config.bos_token_id, model.generation_config.eos_token_id) == (1, 2)
    assert not hasattr(_model(GPT2Model), "generation_config")  # only causal LMs generate
    model.generation_config.max_new_tokens = 7
    model.save_pretrained(tmp_path)
    assert GPT2LMHeadModel.from_pretrained(tmp_path).generation_config.max_new_tokens == 7


def test_reheading_with_num_labels(tmp_path, caplog):
    base = _model(GPT2ForSequenceClassification, num_labels=2)
    base.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError) as err:
        GPT2ForSequenceClassification.from_pretrained(tmp_path, num_labels=3)
    msg = str(err.value)
    assert "score.weight" in msg and "[2, 16]" in msg and "[3, 16]" in msg and "ignore_mismatched_sizes" in msg
    with caplog.at_level(logging.WARNING, logger="openformers"):
        model, info = AutoModelForSequenceClassification.from_pretrained(
            tmp_path, num_labels=3, ignore_mismatched_sizes=True, output_loading_info=True
        )
    assert model.config.num_labels == 3 and model.score.weight.shape == (3, 16)
    assert info["mismatched_keys"] == [("score.weight", (2, 16), (3, 16))]
    assert "score.weight" in caplog.text and "newly initialized" in caplog.text
    # the body is the checkpoint's, the head is freshly initialised (not left empty)
    torch.testing.assert_close(model.transformer.wte.weight, base.transformer.wte.weight)
    assert torch.isfinite(model.score.weight).all() and model.score.weight.abs().sum() > 0
    assert model(IDS).logits.shape == (2, 3)


def test_head_missing_from_checkpoint_is_reported(saved, caplog):
    path, lm = saved
    with caplog.at_level(logging.WARNING, logger="openformers"):
        model, info = GPT2ForSequenceClassification.from_pretrained(path, num_labels=4, output_loading_info=True)
    assert info["missing_keys"] == ["score.weight"] and info["unexpected_keys"] == []
    assert "score.weight" in caplog.text and "newly initialized" in caplog.text
    torch.testing.assert_close(model.transformer.h[0].attn.c_attn.weight, lm.transformer.h[0].attn.c_attn.weight)
    # a base model from a checkpoint with a head: not an error, the head's keys are reported unused
    base, info = GPT2Model.from_pretrained(path, output_loading_info=True)
    assert info["missing_keys"] == []


# -- where files come from ----------------------------------------------------------------------
def test_load_from_directory_and_auto(saved):
    path, model = saved
    for loaded in (GPT2LMHeadModel.from_pretrained(path), AutoModelForCausalLM.from_pretrained(str(path)),
                   openformers.GPT2LMHeadModel.from_pretrained(path)):
        assert isinstance(loaded, GPT2LMHeadModel) and not loaded.training
        _same(loaded, model)


def test_hub_cache_layout_offline_makes_no_network_call(saved, tmp_path, monkeypatch, no_network):
    path, model = saved
    # a second, stale snapshot must not be picked: refs/main names the commit
    make_hub_cache(tmp_path, path)
    stale = tmp_path / "models--org--name" / "snapshots" / ("b" * 40)
    stale.mkdir()
    (stale / "config.json").write_text("{}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _same(AutoModelForCausalLM.from_pretrained("org/name"), model)
    _same(GPT2LMHeadModel.from_pretrained("org/name", revision="a" * 40), model)
    assert AutoConfig.from_pretrained("org/name").n_embd == 16
    with pytest.raises(ModelNotFoundError, match="offline"):
        AutoModel.from_pretrained("org/missing")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    _same(AutoModelForCausalLM.from_pretrained("org/name", local_files_only=True), model)
    with pytest.raises(ModelNotFoundError, match="offline"):
        AutoModelForCausalLM.from_pretrained("org/missing", local_files_only=True)
    with pytest.raises(ModelNotFoundError, match="offline"):
        GPT2LMHeadModel.from_pretrained("org/missing", local_files_only=True)
    assert no_network == []


def test_cache_dir_argument(saved, tmp_path, no_network):
    path, model = saved
    make_hub_cache(tmp_path / "elsewhere", path, repo="someone/tiny")
    loaded = AutoModelForCausalLM.from_pretrained("someone/tiny", cache_dir=tmp_path / "elsewhere", local_files_only=True)
    _same(loaded, model)
    assert no_network == []


# -- weight formats ----------------------------------------------------------------------------
def test_sharded_safetensors_round_trip(saved, tmp_path):
    _, model = saved
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and not (tmp_path / "model.safetensors").exists()
    assert all((tmp_path / s).is_file() for s in shards)
    assert "lm_head.weight" not in index["weight_map"]
    assert index["metadata"]["total_size"] == sum(
        t.numel() * t.element_size() for n, t in model.state_dict().items() if n != "lm_head.weight"
    )
    for name, shard in index["weight_map"].items():
        with safe_open(str(tmp_path / shard), framework="pt") as f:
            assert name in f.keys()
    _same(GPT2LMHeadModel.from_pretrained(tmp_path), model)
    # saving again unsharded removes the shards, so a reload cannot mix layouts
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not (tmp_path / "model.safetensors.index.json").exists()
    assert not list(tmp_path.glob("model-0*.safetensors"))


def test_pytorch_bin_single_and_sharded(saved, tmp_path, monkeypatch):
    _, model = saved
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    single = tmp_path / "single"
    model.save_pretrained(single, safe_serialization=False)
    assert (single / "pytorch_model.bin").is_file() and not list(single.glob("*.safetensors"))
    _same(GPT2LMHeadModel.from_pretrained(single), model)
    sharded = tmp_path / "sharded"
    model.save_pretrained(sharded, safe_serialization=False, max_shard_size="20KB")
    index = json.loads((sharded / "pytorch_model.bin.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    _same(AutoModelForCausalLM.from_pretrained(sharded), model)
    assert calls and all(c is True for c in calls)
    # a .bin written by torch.save directly (the transformers 4 layout, with the tied head)
    plain = tmp_path / "plain"
    plain.mkdir()
    model.config.save_pretrained(plain)
    real_save = torch.save
    real_save(model.state_dict(), plain / "pytorch_model.bin")
    _same(GPT2LMHeadModel.from_pretrained(plain), model)
    # the pre-zip format of torch < 1.6 (many 2019-2020 checkpoints) cannot be memory-mapped
    real_save(model.state_dict(), plain / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    _same(GPT2LMHeadModel.from_pretrained(plain), model)
    assert calls and all(c is True for c in calls)


@pytest.mark.parametrize("dtype", ["auto", "float32", torch.bfloat16, "float16"])
def test_dtype_option(saved, tmp_path, dtype):
    path, model = saved
    expected = torch.float32 if dtype in ("auto", "float32") else getattr(torch, str(dtype).replace("torch.", ""))
    loaded = GPT2LMHeadModel.from_pretrained(path, dtype=dtype)
    assert loaded.dtype == expected and all(p.dtype == expected for p in loaded.parameters())
    assert loaded.config.dtype == str(expected).replace("torch.", "")
    if expected == torch.float32:
        _same(loaded, model)
    else:
        torch.testing.assert_close(loaded.transformer.wte.weight, model.transformer.wte.weight.to(expected))
    assert GPT2LMHeadModel.from_pretrained(path, torch_dtype=dtype).dtype == expected


def test_dtype_auto_follows_config_then_file(tmp_path):
    model = _model().to(torch.bfloat16)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    assert GPT2LMHeadModel.from_pretrained(tmp_path).dtype == torch.bfloat16  # the default is "auto"
    assert GPT2LMHeadModel.from_pretrained(tmp_path, dtype="float32").dtype == torch.float32
    raw = json.loads((tmp_path / "config.json").read_text())
    del raw["dtype"]
    (tmp_path / "config.json").write_text(json.dumps(raw))
    assert GPT2LMHeadModel.from_pretrained(tmp_path, dtype="auto").dtype == torch.bfloat16  # from the file
    raw["torch_dtype"] = "float16"  # the transformers 4 key
    (tmp_path / "config.json").write_text(json.dumps(raw))
    assert GPT2LMHeadModel.from_pretrained(tmp_path).dtype == torch.float16
    with pytest.raises(ValueError, match="dtype='int3'"):
        GPT2LMHeadModel.from_pretrained(tmp_path, dtype="int3")


# -- bad input: each a clear error ------------------------------------------------------------
def test_missing_config_json(saved, tmp_path):
    path, _ = saved
    (tmp_path / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    for load in (AutoModel.from_pretrained, GPT2LMHeadModel.from_pretrained, AutoConfig.from_pretrained):
        with pytest.raises(OSError, match="config.json"):
            load(tmp_path)
    with pytest.raises(ModelNotFoundError, match="no such file or directory"):
        AutoModel.from_pretrained(str(tmp_path / "does" / "not" / "exist"))


def test_unknown_model_type_lists_supported(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "flux-capacitor", "hidden_size": 8}))
    for load in (AutoConfig.from_pretrained, AutoModel.from_pretrained, AutoModelForCausalLM.from_pretrained):
        with pytest.raises(ValueError, match="flux-capacitor") as err:
            load(tmp_path)
        assert "Supported model types" in str(err.value) and "gpt2" in str(err.value) and "llama" in str(err.value)
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(ValueError, match="model_type"):
        AutoModel.from_pretrained(tmp_path)


def test_missing_weights(saved, tmp_path):
    path, _ = saved
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(CheckpointError, match="no weights found") as err:
        GPT2LMHeadModel.from_pretrained(tmp_path)
    assert str(tmp_path) in str(err.value)


@pytest.mark.parametrize("damage", ["truncated", "corrupt_header", "truncated_data"])
def test_damaged_safetensors_names_the_file(saved, tmp_path, damage):
    path, _ = saved
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    data = (path / "model.safetensors").read_bytes()
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "corrupt_header":
        data = data[:8] + b"{not json" + data[17:]
    else:
        data = data[:-100]
    target = tmp_path / "model.safetensors"
    target.write_bytes(data)
    with pytest.raises(CheckpointError) as err:
        GPT2LMHeadModel.from_pretrained(tmp_path)
    assert str(target) in str(err.value)


def test_truncated_bin_names_the_file(saved, tmp_path):
    _, model = saved
    model.save_pretrained(tmp_path, safe_serialization=False)
    target = tmp_path / "pytorch_model.bin"
    target.write_bytes(target.read_bytes()[:300])
    with pytest.raises(CheckpointError) as err:
        GPT2LMHeadModel.from_pretrained(tmp_path)
    assert str(target) in str(err.value)


def test_shape_mismatch_names_tensor_and_shapes(saved, tmp_path):
    path, _ = saved
    wide = _model(n_embd=24, n_head=2)
    wide.save_pretrained(tmp_path)
    config = GPT2Config(**TINY)
    with pytest.raises(CheckpointError) as err:
        GPT2LMHeadModel.from_pretrained(tmp_path, config=config)
    msg = str(err.value)
    assert "transformer.wte.weight" in msg and "[64, 24]" in msg and "[64, 16]" in msg
    assert str(tmp_path) in msg


class _Exploit:
    """Unpickling this creates ``marker``: proof that pickled code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("zip_format", [True, False])
def test_pickled_object_in_bin_is_refused_and_not_executed(saved, tmp_path, zip_format):
    path, _ = saved
    # the payload is live: a plain unpickle creates its marker
    live_marker = tmp_path / "live_marker"
    pickle.loads(pickle.dumps(_Exploit(live_marker))).close()
    assert live_marker.exists()
    marker = tmp_path / "pwned_marker"
    model_dir = tmp_path / "evil"
    model_dir.mkdir()
    (model_dir / "config.json").write_text((path / "config.json").read_text())
    torch.save({"transformer.wte.weight": torch.zeros(64, 16), "payload": _Exploit(marker)},
               model_dir / "pytorch_model.bin", _use_new_zipfile_serialization=zip_format)
    for load in (GPT2LMHeadModel.from_pretrained, AutoModelForCausalLM.from_pretrained):
        with pytest.raises(CheckpointError) as err:
            load(model_dir)
        assert "pytorch_model.bin" in str(err.value) and "nothing in it was executed" in str(err.value)
    assert not marker.exists()


def test_trust_remote_code_refused(saved):
    path, _ = saved
    for load in (AutoModel.from_pretrained, AutoModelForCausalLM.from_pretrained, GPT2LMHeadModel.from_pretrained,
                 AutoConfig.from_pretrained):
        with pytest.raises(ValueError, match="trust_remote_code"):
            load(path, trust_remote_code=True)


def test_unknown_from_pretrained_argument(saved):
    path, _ = saved
    with pytest.raises(TypeError, match="not_an_option"):
        GPT2LMHeadModel.from_pretrained(path, not_an_option=1)
    # config fields are accepted as overrides
    assert GPT2LMHeadModel.from_pretrained(path, resid_pdrop=0.3).config.resid_pdrop == 0.3


# -- memory ------------------------------------------------------------------------------------------
# ru_maxrss survives execve on Linux (the child would inherit pytest's peak), so the peak is read
# from /proc/self/status's VmHWM, the same high-water mark kept per address space, where it exists.
_MEMORY_SCRIPT = textwrap.dedent(
    """
    import gc, json, resource, sys
    import torch, safetensors.torch
    from openformers.models.gpt2 import GPT2LMHeadModel

    def peak_kb():
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    gc.collect()
    before = peak_kb()
    model = GPT2LMHeadModel.from_pretrained(sys.argv[1])
    # weights may be memory-mapped and paged in lazily: touch every one so they count
    total = sum(float(p.double().sum()) for p in model.parameters())
    after = peak_kb()
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    print(json.dumps({"growth_kb": after - before, "weights_kb": nbytes / 1024}))
    """
)


def test_peak_memory_while_loading(tmp_path):
    # ~50 MB of float32 weights: 4 layers of 12 * 512^2 parameters
    cfg = GPT2Config(vocab_size=256, n_embd=512, n_layer=4, n_head=8, n_positions=64)
    with torch.device("meta"):
        meta = GPT2LMHeadModel(cfg)
    gen = torch.Generator().manual_seed(0)
    from safetensors.torch import save_file

    state = {n: torch.randn(p.shape, generator=gen) * 0.02 for n, p in meta.state_dict().items() if n != "lm_head.weight"}
    weight_bytes = sum(t.numel() * 4 for t in state.values())
    assert 45e6 < weight_bytes < 60e6
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    del state, meta
    cfg.save_pretrained(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    ratio = result["growth_kb"] / result["weights_kb"]
    print(f"peak RSS growth while loading: {ratio:.2f}x the weight size ({result['weights_kb'] / 1024:.1f} MiB)")
    assert 0.5 < ratio < 2.2, f"loading grew peak RSS by {ratio:.2f}x the weight size"


def test_slow_loading_shows_a_progress_bar_unless_bars_are_disabled(saved, monkeypatch, capsys):
    from openformers.core import state_loading
    from openformers.utils import progress

    # a tiny model loads in well under the default second: no bar
    GPT2LMHeadModel.from_pretrained(saved[0])
    assert "Loading weights" not in capsys.readouterr().err
    # with the threshold at zero every loading counts as slow
    monkeypatch.setattr(state_loading, "PROGRESS_DELAY", 0.0)
    was_disabled = progress.are_progress_bars_disabled()
    try:
        progress.enable_progress_bars()
        GPT2LMHeadModel.from_pretrained(saved[0])
        err = capsys.readouterr().err
        assert "Loading weights" in err and "tensor" in err, err
        progress.disable_progress_bars()
        GPT2LMHeadModel.from_pretrained(saved[0])
        assert "Loading weights" not in capsys.readouterr().err
    finally:
        (progress.disable_progress_bars if was_disabled else progress.enable_progress_bars)()
