"""MLflow (local file store) and Comet (offline archive): what the trainer logged, read back
with each tracker's own client or file format. Skipped when the tracker is not installed:
mlflow-skinny is in the test extra; comet_ml is not (transformers imports it at import time
whenever it is installed), so run ``pip install comet_ml`` to include the Comet archive test."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.training.helpers import train_tiny_with_eval

HERE = Path(__file__).parent


def test_mlflow_file_store_holds_metrics_and_params(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    import mlflow
    from mlflow.tracking import MlflowClient

    store = tmp_path / "mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow 3 wants an explicit opt-in to the file store
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "openformers-test")
    monkeypatch.setenv("MLFLOW_TAGS", json.dumps({"team": "tiny"}))
    mlflow.set_tracking_uri(store.as_uri())
    trainer = train_tiny_with_eval(tmp_path, report_to="mlflow", run_name="tiny-run", learning_rate=3e-4)
    assert mlflow.active_run() is None  # the run started for training was ended
    client = MlflowClient(tracking_uri=store.as_uri())
    experiment = client.get_experiment_by_name("openformers-test")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "tiny-run" and run.info.status == "FINISHED"
    assert run.data.tags["team"] == "tiny"
    assert run.data.params["learning_rate"] == "0.0003" and run.data.params["config/n_embd"] == "32"
    logged = [(h["step"], h["loss"]) for h in trainer.state.log_history if "loss" in h]
    history = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")]
    assert [s for s, _ in history] == [s for s, _ in logged] == [1, 2, 3, 4]
    assert [v for _, v in history] == pytest.approx([v for _, v in logged], rel=1e-6)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "eval_loss")] == [2, 4]
    assert "train_loss" in run.data.metrics


def test_mlflow_leaves_a_run_the_user_started_open(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    import mlflow

    store = tmp_path / "mlruns"
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri(store.as_uri())
    mlflow.set_experiment("user-experiment")  # also forgets the experiment of an earlier test's store
    with mlflow.start_run() as run:
        train_tiny_with_eval(tmp_path, report_to="mlflow")
        assert mlflow.active_run().info.run_id == run.info.run_id
    metrics = mlflow.tracking.MlflowClient(tracking_uri=store.as_uri()).get_run(run.info.run_id).data.metrics
    assert "loss" in metrics and "eval_loss" in metrics


def _comet_messages(archive: Path) -> tuple[dict, list[dict]]:
    with zipfile.ZipFile(archive) as z:
        experiment = json.loads(z.read("experiment.json"))
        messages = [json.loads(line) for line in z.read("messages.json").decode().splitlines() if line.strip()]
    return experiment, messages


def _run_comet(tmp_path: Path, mode: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COMET_MODE": mode, "COMET_OFFLINE_DIRECTORY": str(tmp_path / "archive"),
           "COMET_PROJECT_NAME": "openformers-test", "OMP_NUM_THREADS": "1", "COMET_DISABLE_AUTO_LOGGING": "1"}
    return subprocess.run([sys.executable, str(HERE / "run_report.py"), str(tmp_path / "out"), "comet_ml"],
                          capture_output=True, text=True, timeout=300, env=env)


def test_comet_offline_archive_holds_metrics_and_params(tmp_path):
    pytest.importorskip("comet_ml")
    proc = _run_comet(tmp_path, "offline")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (archive,) = (tmp_path / "archive").glob("*.zip")
    experiment, messages = _comet_messages(archive)
    assert experiment["project_name"] == "openformers-test"
    metrics: dict[str, list[tuple[int, float]]] = {}
    params: dict[str, object] = {}
    for m in messages:
        if m["type"] == "metric_msg":
            metric = m["payload"]["metric"]
            metrics.setdefault(metric["metricName"], []).append((metric["step"], metric["metricValue"]))
        elif m["type"] == "parameter_msg":
            param = m["payload"]["param"]
            params[param["paramName"]] = param["paramValue"]
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    logged = [(h["step"], h["loss"]) for h in history if "loss" in h]
    assert [s for s, _ in metrics["loss"]] == [1, 2, 3, 4]
    assert [float(v) for _, v in metrics["loss"]] == pytest.approx([v for _, v in logged], rel=1e-6)
    assert [s for s, _ in metrics["eval_loss"]] == [2, 4]
    assert float(params["learning_rate"]) == 5e-5 and str(params["config_n_embd"]) == "32"
    names = [m["payload"] for m in messages if m["type"] == "log_other"]
    assert any(p.get("key") == "Name" and p.get("value") == "tiny-run" for p in names), names


def test_comet_disabled_starts_no_experiment(tmp_path, monkeypatch):
    import types

    def start(**kw):
        raise AssertionError("COMET_MODE=disabled must not start an experiment")

    # a stand-in module: importing the real comet_ml would patch later imports of this process
    monkeypatch.setitem(sys.modules, "comet_ml", types.SimpleNamespace(start=start))
    monkeypatch.setattr("openformers.training.integrations._require", lambda *a: None)
    monkeypatch.setenv("COMET_MODE", "disabled")
    trainer = train_tiny_with_eval(tmp_path, report_to="comet_ml")
    assert trainer.state.global_step == 4
    monkeypatch.setenv("COMET_MODE", "sideways")
    with pytest.raises(ValueError, match="COMET_MODE='sideways'"):
        train_tiny_with_eval(tmp_path, report_to="comet_ml")
