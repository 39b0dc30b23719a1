"""The Accelerator: 2 processes on gloo (started by ``openformers launch``) train like one process
with the same global batch, with and without FSDP2; ``gather_for_metrics`` returns exactly the
evaluation set; a sharded checkpoint saved by 2 processes resumes on 2 and on 1; ``save_state`` /
``load_state`` resume bitwise; the batch sharding matches Accelerate's own.

One launch runs every 2-process job (run_accelerate.py); the one-process references run here.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

from openformers.distributed import Accelerator, set_seed
from openformers.distributed.data import _local_batches, _split_batches
from tests.distributed import run_accelerate as job
from tests.training.helpers import pad_collator, tiny_gpt2

HERE = Path(__file__).parent
ROOT = HERE.parents[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("accelerate")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run([sys.executable, "-m", "openformers", "launch", "--num_processes", "2",
                           str(HERE / "run_accelerate.py"), str(root / "two")],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each of the two processes runs
    try:
        job.ddp_job(root / "one")
        job.fsdp_job(root / "one", fsdp=False)
        resumed = job.fsdp_job(root / "one_from_two", fsdp=False, checkpoint=root / "two" / "state")
    finally:
        torch.set_num_threads(threads)
    return root, resumed


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_two_processes_equal_one_with_the_same_global_batch(runs):
    root, _ = runs
    one, two = _read(root / "one" / "ddp.json"), _read(root / "two" / "ddp.json")
    assert len(one["losses"]) == 8
    assert one["losses"] == pytest.approx(two["losses"], abs=1e-6)
    # gather_for_metrics drops the samples repeated to even out the last batch: 27 rows, in order
    assert one["eval_rows"] == two["eval_rows"] == 27
    assert one["preds"] == two["preds"]
    # split_between_processes, pad_across_processes, reduce across the 2 processes
    assert two["parts"] == [["a", "b", "c"], ["d", "e"]] and one["parts"] == [["a", "b", "c", "d", "e"]]
    assert two["padded_parts"] == [0, 1, 2, 3, 4, 4]
    assert two["padded"] == [[1.0, 1.0], [-1.0, -1.0], [2.0, 2.0], [2.0, 2.0]] and two["sum"] == [0.0, 3.0]
    from safetensors.torch import load_file

    a, b = load_file(root / "one" / "ddp_model" / "model.safetensors"), load_file(root / "two" / "ddp_model" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-5, msg=k)


def test_fsdp2_equals_one_process_and_its_sharded_checkpoint_resumes_on_two_and_one(runs):
    root, resumed_on_one = runs
    plain, sharded = _read(root / "one" / "plain.json"), _read(root / "two" / "fsdp.json")
    assert sharded["losses"] == pytest.approx(plain["losses"], abs=1e-5)
    assert sharded["resumed"] == pytest.approx(sharded["losses"][2:], abs=1e-6)  # on 2 processes
    assert resumed_on_one["resumed"] == pytest.approx(sharded["losses"][2:], abs=1e-5)  # on 1, unsharded
    assert (root / "two" / "state" / "pytorch_model_fsdp_0").is_dir()
    # save_model gathers the full model on the main process (sharded files + index), which from_pretrained reads
    from openformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(root / "two" / "pretrained")
    reference = AutoModelForCausalLM.from_pretrained(root / "one" / "pretrained")
    assert json.loads((root / "two" / "pretrained" / "config.json").read_text())["architectures"] == ["GPT2LMHeadModel"]
    for (k, v), (_, w) in zip(model.state_dict().items(), reference.state_dict().items()):
        torch.testing.assert_close(v, w, atol=1e-5, rtol=1e-5, msg=k)
    # save_model: the same weights in safetensors shards with an index
    from openformers.core.checkpoint import find_weight_files, iter_checkpoint

    assert (root / "two" / "model" / "model.safetensors.index.json").is_file()
    shards = dict(iter_checkpoint(find_weight_files(root / "two" / "model")))
    assert len(list((root / "two" / "model").glob("model-*.safetensors"))) > 1
    for k, v in shards.items():
        torch.testing.assert_close(v, model.state_dict()[k], msg=k)


def _train(tmp: Path, steps: int, save_at: int = 0, resume: Path | None = None) -> tuple[list[float], dict]:
    acc = Accelerator(gradient_accumulation_steps=2)
    set_seed(11)
    model = tiny_gpt2(dropout=0.1, seed=0 if resume is None else 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (1 + s))
    loader = DataLoader(job.lm_rows(24, seed=3), batch_size=4, shuffle=True, collate_fn=pad_collator)
    model, optimizer, loader, scheduler = acc.prepare(model, optimizer, loader, scheduler)
    if resume is not None:
        acc.load_state(resume)
    losses: list[float] = []
    done = 0 if resume is None else save_at
    while done < steps:
        for batch in loader:
            with acc.accumulate(model):
                loss = model(**batch).loss
                acc.backward(loss)
                acc.clip_grad_norm_(model.parameters(), 0.5)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            losses.append(float(loss.detach()))
            done += 1
            if done == save_at and resume is None:
                acc.save_state(tmp / "state")
            if done == steps:
                break
    return losses, {k: v.clone() for k, v in acc.unwrap_model(model).state_dict().items()}


def test_save_state_load_state_resumes_bitwise(tmp_path):
    # 10 micro-batches over 6-batch epochs (an epoch boundary after the save at an update), dropout, AdamW, a scheduler
    full, weights = _train(tmp_path, 10, save_at=4)
    again, weights_again = _train(tmp_path, 10, save_at=4, resume=tmp_path / "state")
    assert again == full[4:]
    for k in weights:
        assert torch.equal(weights[k], weights_again[k]), k
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == [
        "dl_state_dict.bin", "model.safetensors", "optimizer.bin", "random_states_0.pkl", "scheduler.bin"]


@pytest.mark.parametrize("length,batch,procs,drop_last,even", [
    (22, 3, 2, False, True), (21, 3, 2, False, True), (24, 3, 2, False, True), (22, 3, 2, True, True),
    (22, 3, 2, False, False), (5, 4, 3, False, True), (2, 4, 2, False, True), (23, 4, 3, False, True)])
def test_batch_sharding_matches_accelerate(length, batch, procs, drop_last, even):
    from accelerate.data_loader import BatchSamplerShard

    sampler = BatchSampler(SequentialSampler(range(length)), batch, drop_last)
    for rank in range(procs):
        theirs = list(BatchSamplerShard(sampler, procs, rank, even_batches=even))
        ours = list(_local_batches(iter(sampler), batch, procs, rank, even, drop_last))
        assert ours == theirs, (rank, ours, theirs)
        split = BatchSampler(SequentialSampler(range(length)), batch * procs, drop_last)
        theirs = list(BatchSamplerShard(split, procs, rank, split_batches=True, even_batches=even))
        if even or drop_last:
            assert list(_split_batches(iter(split), batch * procs, procs, rank)) == theirs


def test_matches_accelerate_on_one_process():
    """The same loop (accumulation, clipping, scheduler) with Accelerate's Accelerator and ours."""
    import accelerate

    def loop(cls) -> tuple[list[float], dict]:
        acc = cls(gradient_accumulation_steps=2)
        torch.manual_seed(0)
        model = tiny_gpt2(seed=0)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 2, 0.5)
        loader = DataLoader(job.lm_rows(20, seed=6), batch_size=4, collate_fn=pad_collator)
        model, optimizer, loader, scheduler = acc.prepare(model, optimizer, loader, scheduler)
        losses = []
        for batch in loader:
            with acc.accumulate(model):
                loss = model(**batch).loss
                acc.backward(loss)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            losses.append(float(loss.detach()))
        return losses, acc.unwrap_model(model).state_dict()

    ours, w_ours = loop(Accelerator)
    theirs, w_theirs = loop(accelerate.Accelerator)
    assert ours == theirs
    for k in w_ours:
        assert torch.equal(w_ours[k], w_theirs[k]), k


def test_one_process_helpers(tmp_path):
    acc = Accelerator(mixed_precision="bf16", log_with="tensorboard", project_dir=tmp_path)
    assert acc.is_main_process and acc.is_local_main_process and acc.num_processes == 1
    assert acc.distributed_type == "NO" and acc.device == torch.device("cpu")
    with acc.split_between_processes(["a", "b", "c"]) as part:
        assert part == ["a", "b", "c"]
    with acc.main_process_first():
        pass
    t = torch.arange(6.0).reshape(3, 2)
    assert torch.equal(acc.gather(t), t) and torch.equal(acc.reduce(t, "mean"), t)
    assert torch.equal(acc.pad_across_processes(t), t)
    model = acc.prepare(torch.nn.Linear(4, 4))
    assert model(torch.randn(2, 4)).dtype == torch.bfloat16  # autocast around forward
    assert acc.unwrap_model(model, keep_fp32_wrapper=False)(torch.randn(2, 4)).dtype == torch.float32
    loader = acc.prepare(DataLoader(list(range(10)), batch_size=3))
    assert [b.tolist() for b in acc.skip_first_batches(loader, 2)] == [[6, 7, 8], [9]]
    assert [b.tolist() for b in loader][0] == [0, 1, 2]
    acc.init_trackers("run", config={"lr": 0.1})
    acc.log({"loss": 1.5}, step=1)
    acc.end_training()
    assert list((tmp_path / "run").glob("events.out.tfevents.*"))
    with pytest.raises(ValueError, match="mixed_precision"):
        Accelerator(mixed_precision="fp8")
    from openformers.distributed import FullyShardedDataParallelPlugin

    with pytest.raises(ValueError, match="openformers launch"):
        Accelerator(fsdp_plugin=FullyShardedDataParallelPlugin())


def test_seed_examples_run(capsys):
    import runpy

    runpy.run_path(str(ROOT / "examples" / "accelerate_seed.py"), run_name="__main__")
    assert capsys.readouterr().out.strip().endswith("torch.Size([16, 2])")
