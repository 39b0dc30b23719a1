"""Names taken from files or arguments never make a path outside their root (model folder,
Hugging Face cache, saved dataset), and ``org--name`` is not taken for ``org/name``."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from openformers.core.checkpoint import CheckpointError
from openformers.core.hub import UnsafePathError, check_repo_id, contained_path
from tests.hub_cache import make_hub_cache


def _sharded(tmp_path: Path, src: Path, shard_name: str) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(src / "config.json", model / "config.json")
    index = {"metadata": {}, "weight_map": {"transformer.wte.weight": shard_name}}
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    return model


@pytest.mark.parametrize("shard", ["../outside.safetensors", "ABSOLUTE"])
def test_shard_index_cannot_name_a_file_outside_the_model(tmp_path, tiny_gpt2_dir, shard):
    from openformers.models.gpt2 import GPT2LMHeadModel

    outside = tmp_path / "outside.safetensors"
    shutil.copy(tiny_gpt2_dir / "model.safetensors", outside)
    model = _sharded(tmp_path, tiny_gpt2_dir, str(outside) if shard == "ABSOLUTE" else shard)
    with pytest.raises(CheckpointError, match="outside|absolute"):
        GPT2LMHeadModel.from_pretrained(model)


def test_shard_index_symlink_out_of_the_model_is_refused(tmp_path, tiny_gpt2_dir):
    from openformers.models.gpt2 import GPT2LMHeadModel

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(tiny_gpt2_dir / "model.safetensors", outside / "w.safetensors")
    model = _sharded(tmp_path, tiny_gpt2_dir, "link/w.safetensors")
    (model / "link").symlink_to(outside)
    with pytest.raises(CheckpointError, match="points outside"):
        GPT2LMHeadModel.from_pretrained(model)


def test_weight_map_of_the_wrong_type_names_the_index(tmp_path, tiny_gpt2_dir):
    from openformers.models.gpt2 import GPT2LMHeadModel

    model = _sharded(tmp_path, tiny_gpt2_dir, "x.safetensors")
    (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": ["a", "b"]}))
    with pytest.raises(CheckpointError, match="weight_map.*must map"):
        GPT2LMHeadModel.from_pretrained(model)
    (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": 3}}))
    with pytest.raises(CheckpointError, match="weight_map.*must map"):
        GPT2LMHeadModel.from_pretrained(model)


@pytest.fixture
def hub(tmp_path, tiny_gpt2_dir, monkeypatch):
    cache = tmp_path / "hub"
    repo_dir = make_hub_cache(cache, tiny_gpt2_dir).parents[1]
    # a model outside the cache that an escaping name would reach
    victim = tmp_path / "victim"
    shutil.copytree(tiny_gpt2_dir, victim)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return repo_dir, victim


def test_cached_repo_still_loads(hub):
    from openformers.models.auto import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained("org/name").config.n_embd == 16


def test_revision_cannot_climb_out_of_the_cache(hub):
    from openformers.models.auto import AutoModelForCausalLM

    repo_dir, victim = hub
    rel = Path("../../..") / victim.relative_to(repo_dir.parent.parent)  # from snapshots/ up to tmp_path
    with pytest.raises(UnsafePathError, match="revision"):
        AutoModelForCausalLM.from_pretrained("org/name", revision=str(rel))


def test_ref_file_pointing_outside_is_refused(hub):
    from openformers.models.auto import AutoModelForCausalLM

    repo_dir, victim = hub
    (repo_dir / "refs" / "main").write_text(str(Path("../../..") / victim.relative_to(repo_dir.parent.parent)))
    with pytest.raises(UnsafePathError, match="not a commit hash"):
        AutoModelForCausalLM.from_pretrained("org/name")


@pytest.mark.parametrize("entry", ["model", "config", "tokenizer", "generation"])
def test_subfolder_cannot_climb_out(hub, entry):
    repo_dir, victim = hub
    snap = next((repo_dir / "snapshots").iterdir())
    rel = str(Path("../../../..") / victim.relative_to(repo_dir.parent.parent))
    assert (snap / rel).resolve() == victim.resolve()
    with pytest.raises(UnsafePathError, match="subfolder"):
        if entry == "model":
            from openformers.models.auto import AutoModelForCausalLM

            AutoModelForCausalLM.from_pretrained("org/name", subfolder=rel)
        elif entry == "config":
            from openformers.models.auto import AutoConfig

            AutoConfig.from_pretrained("org/name", subfolder=rel)
        elif entry == "tokenizer":
            from openformers.tokenization.auto import AutoTokenizer

            AutoTokenizer.from_pretrained("org/name", subfolder=rel)
        else:
            from openformers.generation.config import GenerationConfig

            GenerationConfig.from_pretrained("org/name", subfolder=rel)


def test_double_dash_is_not_a_slash(hub):
    from openformers.models.auto import AutoModelForCausalLM

    with pytest.raises(UnsafePathError, match="'org--name' is not a valid repository id"):
        AutoModelForCausalLM.from_pretrained("org--name")


@pytest.mark.parametrize("bad", ["org--name", "a..b", "-x", "x.", "a/b/c", "a b", ""])
def test_repo_id_rules(bad):
    with pytest.raises(UnsafePathError):
        check_repo_id(bad)


@pytest.mark.parametrize("good", ["gpt2", "org/name", "HuggingFaceTB/SmolLM2-135M-Instruct", "a_b.c-d"])
def test_valid_repo_ids(good):
    assert check_repo_id(good) == good


def test_contained_path_allows_the_cache_blobs(tmp_path):
    repo = tmp_path / "models--a--b"
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / "123").write_text("x")
    snap = repo / "snapshots" / ("c" * 40)
    snap.mkdir(parents=True)
    (snap / "config.json").symlink_to(repo / "blobs" / "123")
    assert contained_path(snap, "config.json", "file").read_text() == "x"
    (snap / "evil.json").symlink_to(tmp_path)
    with pytest.raises(UnsafePathError):
        contained_path(snap, "evil.json", "file")


def test_adapter_subfolder_cannot_climb_out(tmp_path):
    from openformers.peft.config import PeftConfig

    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    (tmp_path / "adapter").mkdir()
    with pytest.raises(UnsafePathError, match="subfolder"):
        PeftConfig.from_pretrained(tmp_path / "adapter", subfolder="../outside")


def test_saved_dataset_files_stay_inside(tmp_path):
    from openformers.data import Dataset, load_from_disk

    Dataset.from_dict({"a": [1, 2, 3]}).save_to_disk(tmp_path / "ds")
    (tmp_path / "other").mkdir()
    state_file = tmp_path / "ds" / "state.json"
    state = json.loads(state_file.read_text())
    name = state["_data_files"][0]["filename"]
    shutil.copy(tmp_path / "ds" / name, tmp_path / "other" / name)
    state["_data_files"][0]["filename"] = f"../other/{name}"
    state_file.write_text(json.dumps(state))
    with pytest.raises(UnsafePathError, match="_data_files"):
        load_from_disk(tmp_path / "ds")


def test_saved_dataset_dict_splits_stay_inside(tmp_path):
    from openformers.data import Dataset, DatasetDict, load_from_disk

    DatasetDict({"train": Dataset.from_dict({"a": [1]})}).save_to_disk(tmp_path / "dd")
    shutil.copytree(tmp_path / "dd" / "train", tmp_path / "stolen")
    (tmp_path / "dd" / "dataset_dict.json").write_text(json.dumps({"splits": ["../stolen"]}))
    with pytest.raises(UnsafePathError, match="split"):
        load_from_disk(tmp_path / "dd")


def test_push_to_local_hub_refuses_escaping_repo_ids():
    from openformers.training.hub import push_to_local_hub

    class Args:
        hub_model_id = "org/../../x"
        output_dir = "out"

    class Trainer:
        args = Args()

    with pytest.raises(UnsafePathError):
        push_to_local_hub(Trainer(), repo_id="org/../../x")


def test_adapter_names_cannot_climb_out_of_the_save_directory(tmp_path, tiny_gpt2_dir):
    from openformers.models.gpt2 import GPT2LMHeadModel
    from openformers.peft import LoraConfig, get_peft_model

    model = get_peft_model(GPT2LMHeadModel.from_pretrained(tiny_gpt2_dir), LoraConfig(r=2, target_modules=["c_attn"]))
    escaped = str(tmp_path / "escaped")  # an absolute name: module names may not hold ".", but may hold "/"
    if "." in escaped:
        pytest.skip("the temporary folder's path holds a dot")
    model.add_adapter(escaped, LoraConfig(r=2, target_modules=["c_attn"]))
    with pytest.raises(UnsafePathError, match="adapter name"):
        model.save_pretrained(tmp_path / "out")
    assert not (tmp_path / "escaped").exists()
