"""Model cards (read by huggingface_hub, validated as the Hub does) and the local hub with history."""
from __future__ import annotations

import pytest
import torch

from openformers import AutoModelForCausalLM, AutoModelForSequenceClassification
from openformers.hub import LocalHub, ModelCard, RevisionNotFoundError
from openformers.models.auto import AutoConfig
from tests.training.helpers import train_tiny_with_eval


def _tiny_classifier(seed: int = 0):
    torch.manual_seed(seed)
    cfg = AutoConfig.for_model("bert", vocab_size=99, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=20, num_labels=2)
    return AutoModelForSequenceClassification.from_config(cfg).eval()


def test_trainer_card_parses_with_huggingface_hub(tmp_path):
    from huggingface_hub import ModelCard as HFModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    trainer = train_tiny_with_eval(tmp_path, report_to="none")
    path = trainer.create_model_card(license="apache-2.0", language="en", dataset="tiny-lm", tags=["test"],
                                     finetuned_from="openai-community/gpt2")
    assert path == tmp_path / "out" / "README.md"
    hf = HFModelCard.load(path)  # huggingface_hub's own parser and card data validation
    data = hf.data.to_dict()
    assert data["license"] == "apache-2.0" and data["language"] == "en" and data["library_name"] == "openformers"
    assert data["base_model"] == "openai-community/gpt2" and data["datasets"] == ["tiny-lm"]
    assert data["pipeline_tag"] == "text-generation" and {"test", "generated_from_trainer"} <= set(data["tags"])
    name, results = model_index_to_eval_results(data["model-index"])
    last_eval = [h for h in trainer.state.log_history if "eval_loss" in h][-1]
    by_type = {r.metric_type: r.metric_value for r in results}
    assert name == "out" and by_type["loss"] == pytest.approx(last_eval["eval_loss"])
    assert results[0].dataset_name == "tiny-lm" and results[0].task_type == "text-generation"
    assert hf.data.eval_results  # the card data carries them too
    # the body: hyperparameters and one log row per evaluation
    text = hf.text
    assert "- learning_rate: 5e-05" in text and "| Training Loss | Epoch | Step | Validation Loss |" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "Training Loss" not in line]
    assert len(rows) == sum("eval_loss" in h for h in trainer.state.log_history) == 2

    from huggingface_hub import metadata_load

    assert metadata_load(path)["model-index"][0]["results"][0]["metrics"][0]["type"] == "loss"
    ours = ModelCard.load(tmp_path / "out")  # our reader gives the same metadata back
    assert ours.data.to_dict() == data
    ours.validate()
    ours.data.license = "mit"
    ours.save(tmp_path / "again.md")
    assert HFModelCard.load(tmp_path / "again.md").data.license == "mit"


def test_card_validation_names_the_problem():
    card = ModelCard("---\nmodel-index:\n- name: m\n  results:\n  - task: {type: text-classification}\n---\n# m\n")
    with pytest.raises(ValueError, match="dataset.name and dataset.type"):
        card.validate()
    with pytest.raises(ValueError, match="not a mapping"):
        ModelCard("---\n- a\n- b\n---\ntext")


def test_push_history_branches_tags_and_dedup(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENFORMERS_HUB", str(tmp_path / "hub"))
    hub = LocalHub()
    model = _tiny_classifier(0)
    c1 = model.push_to_hub("acme/tiny-bert", commit_message="first")
    blobs_after_first = set(p.name for p in hub.iter_blobs("acme/tiny-bert"))
    hub.create_tag("acme/tiny-bert", "v1")
    with torch.no_grad():
        model.classifier.weight.add_(1.0)  # only the weights change
    c2 = model.push_to_hub("acme/tiny-bert", commit_message="second")
    assert c1 != c2 and len(c1) == 40
    blobs = set(p.name for p in hub.iter_blobs("acme/tiny-bert"))
    assert len(blobs - blobs_after_first) == 1  # config.json and README.md were stored once
    history = hub.list_repo_commits("acme/tiny-bert")
    assert [c.commit_id for c in history] == [c2, c1] and history[0].parents == [c1]
    assert history[0].title == "second" and history[1].title == "first"
    assert model.push_to_hub("acme/tiny-bert") == c2  # nothing changed: no new commit

    hub.create_branch("acme/tiny-bert", "experiment", revision="v1")
    with pytest.raises(FileExistsError):
        hub.create_tag("acme/tiny-bert", "v1")
    refs = hub.list_repo_refs("acme/tiny-bert")
    assert refs == {"branches": {"main": c2, "experiment": c1}, "tags": {"v1": c1}}

    first = model.classifier.weight.detach() - 1.0
    for revision, weight in (("v1", first), ("experiment", first), (c1, first), (c1[:10], first),
                             ("main", model.classifier.weight), (None, model.classifier.weight), (c2, model.classifier.weight)):
        loaded = AutoModelForSequenceClassification.from_pretrained(
            "acme/tiny-bert", revision=hub.resolve("acme/tiny-bert", revision) if revision and len(revision) < 40 and
            revision not in ("v1", "experiment", "main") else revision, local_files_only=True)
        assert torch.allclose(loaded.classifier.weight, weight), revision
    card = ModelCard.load("acme/tiny-bert", revision="v1")
    assert card.data.library_name == "openformers" and card.data.pipeline_tag == "text-classification"
    with pytest.raises(RevisionNotFoundError, match="branches"):
        hub.resolve("acme/tiny-bert", "nope")

    models = hub.list_models()
    assert [(m.id, m.sha, m.tags) for m in models] == [("acme/tiny-bert", c2, ["v1"])]
    from openformers.cli.main import main as cli_main

    assert cli_main(["hub", "log", "acme/tiny-bert", "--hub", str(hub.root)]) == 0
    assert cli_main(["hub", "tag", "acme/tiny-bert", "v2", "--hub", str(hub.root)]) == 0
    assert cli_main(["hub", "list", "--hub", str(hub.root)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed[:2]] == [c2, c1] and printed[2] == c2
    assert printed[3].startswith(f"acme/tiny-bert  {c2}") and "tags: v1, v2" in printed[3]
    assert hub.list_models(author="other") == []
    with pytest.raises(ValueError, match="not a valid repository"):
        hub.repo_dir("../etc")


def test_save_pretrained_model_card_and_trainer_push(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENFORMERS_HUB", str(tmp_path / "hub"))
    model = _tiny_classifier(1)
    model.save_pretrained(tmp_path / "saved", model_card=True)
    assert ModelCard.load(tmp_path / "saved").data.pipeline_tag == "text-classification"

    trainer = train_tiny_with_eval(tmp_path, report_to="none", hub_model_id="acme/tiny-gpt2")
    first = trainer.push_to_hub("first")
    second = trainer.push_to_hub("again")  # the same files: the same commit
    assert first == second
    hub = LocalHub()
    files = hub.list_files("acme/tiny-gpt2")
    assert {"README.md", "config.json", "training_args.json"} <= set(files)
    loaded = AutoModelForCausalLM.from_pretrained("acme/tiny-gpt2", local_files_only=True)
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_tokenizer_push_to_hub_keeps_the_model_files(tmp_path, monkeypatch):
    from openformers import AutoModel, AutoTokenizer, embedded_model_path

    monkeypatch.setenv("OPENFORMERS_HUB", str(tmp_path / "hub"))
    hub = LocalHub()
    model = _tiny_classifier(0)
    first = model.push_to_hub("acme/with-tokenizer", commit_message="model")
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path("minilm"))
    second = tokenizer.push_to_hub("acme/with-tokenizer", commit_message="tokenizer", private=True)
    assert second != first
    snapshot = hub.snapshot_dir("acme/with-tokenizer", second)
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {p.name for p in snapshot.iterdir()}
    reloaded = AutoTokenizer.from_pretrained("acme/with-tokenizer")
    assert reloaded("a test")["input_ids"] == tokenizer("a test")["input_ids"]
    assert AutoModel.from_pretrained("acme/with-tokenizer", revision=first) is not None
    # save_pretrained(push_to_hub=True) commits too, to the folder's name unless repo_id says otherwise
    tokenizer.save_pretrained(tmp_path / "tok", push_to_hub=True, repo_id="acme/tok-only")
    assert (hub.snapshot_dir("acme/tok-only") / "tokenizer.json").is_file()
