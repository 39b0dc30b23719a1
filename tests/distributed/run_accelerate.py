"""Driver for the Accelerator tests: python run_accelerate.py OUT (under ``openformers launch`` for 2 processes).

Every job takes the same global batch (8) whatever the number of processes, so one process and
two give the same training; each writes OUT/<job>.json on the main process.

- ``ddp_job``: SGD with gradient accumulation (2) over a shuffled loader for 2 epochs, the mean
  loss of every micro-batch, then predictions over a 27-row evaluation set through
  ``gather_for_metrics``; the final weights through ``save_model``.
- ``fsdp_job``: FSDP2 (when ``fsdp``) or plain, SGD with momentum, 4 steps, ``save_state`` after
  step 2 (a sharded torch.distributed.checkpoint), ``save_model``; then a fresh model and
  optimizer ``load_state`` it and train steps 3 and 4 again.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from openformers.distributed import Accelerator, FullyShardedDataParallelPlugin, set_seed  # noqa: E402
from tests.training.helpers import pad_collator, tiny_gpt2  # noqa: E402

GLOBAL_BATCH = 8


def lm_rows(n: int, seed: int = 0, length: int = 8) -> list[dict[str, list[int]]]:
    """Rows of equal length: the mean loss of a batch is the mean of its processes' mean losses."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 64, (n, length), generator=g).tolist()
    return [{"input_ids": r, "labels": r} for r in ids]


def _write(acc: Accelerator, out: Path, name: str, data: dict) -> None:
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.json").write_text(json.dumps(data))


def ddp_job(out: Path) -> None:
    acc = Accelerator(gradient_accumulation_steps=2)
    set_seed(3)
    model = tiny_gpt2(seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    per = GLOBAL_BATCH // acc.num_processes
    train = DataLoader(lm_rows(32), batch_size=per, shuffle=True, collate_fn=pad_collator)
    evaluation = DataLoader(lm_rows(27, seed=1), batch_size=per, collate_fn=pad_collator)
    model, optimizer, train, evaluation = acc.prepare(model, optimizer, train, evaluation)
    losses = []
    for _epoch in range(2):
        model.train()
        for batch in train:
            with acc.accumulate(model):
                loss = model(**batch).loss
                acc.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
            losses.append(float(acc.reduce(loss.detach(), "mean")))
    model.eval()
    preds, seen = [], 0
    for batch in evaluation:
        with torch.no_grad():
            logits = model(**batch).logits
        gathered = acc.gather_for_metrics(logits.argmax(-1))
        seen += gathered.shape[0]
        preds.extend(gathered.tolist())
    acc.save_model(model, out / "ddp_model")
    # collectives with different data on each process
    rank = acc.process_index
    with acc.split_between_processes(["a", "b", "c", "d", "e"]) as part:
        parts = acc.gather_object([part])
    with acc.split_between_processes(torch.arange(5), apply_padding=True) as part:
        padded_parts = acc.gather(part).tolist()
    ragged = torch.full((rank + 1, 2), float(rank + 1))
    padded = acc.pad_across_processes(ragged, dim=0, pad_index=-1)
    with acc.main_process_first():  # no collective inside: the other processes wait at a barrier
        order = [float(rank)]
    order.append(float(acc.reduce(torch.tensor(float(rank + 1)), "sum")))
    _write(acc, out, "ddp", {"losses": losses, "eval_rows": seen, "preds": preds, "parts": parts,
                             "padded_parts": padded_parts, "padded": acc.gather(padded).tolist(), "sum": order})


def _fsdp_parts(fsdp: bool, seed: int) -> tuple:
    plugin = FullyShardedDataParallelPlugin(transformer_cls_names_to_wrap=["GPT2Block"]) if fsdp else None
    acc = Accelerator(fsdp_plugin=plugin)
    model = tiny_gpt2(seed=seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    loader = DataLoader(lm_rows(64, seed=2), batch_size=GLOBAL_BATCH // acc.num_processes, shuffle=True,
                        collate_fn=pad_collator)
    model, optimizer, loader = acc.prepare(model, optimizer, loader)
    return acc, model, optimizer, loader


def _steps(acc: Accelerator, model, optimizer, loader, n: int, save_at: int = 0, save_to: Path | None = None) -> list[float]:
    losses = []
    for batch in loader:
        loss = model(**batch).loss
        acc.backward(loss)
        acc.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(acc.reduce(loss.detach(), "mean")))
        if len(losses) == save_at:
            acc.save_state(save_to)
        if len(losses) == n:
            break
    return losses


def fsdp_job(out: Path, fsdp: bool = True, checkpoint: Path | None = None) -> dict:
    """Train 4 steps with a save_state after 2; or, given ``checkpoint``, resume from it for 2 steps."""
    set_seed(5)
    acc, model, optimizer, loader = _fsdp_parts(fsdp, seed=0 if checkpoint is None else 1)
    if checkpoint is not None:
        acc.load_state(checkpoint)
        return {"resumed": _steps(acc, model, optimizer, loader, 2)}
    losses = _steps(acc, model, optimizer, loader, 4, save_at=2, save_to=out / "state")
    acc.save_model(model, out / "model", max_shard_size="40KB")
    # the full model gathered on the main process, as transformers' save_pretrained writes it
    acc.unwrap_model(model).save_pretrained(out / "pretrained", is_main_process=acc.is_main_process,
                                            save_function=acc.save, state_dict=acc.get_state_dict(model))
    result = {"losses": losses}
    # resume on as many processes as saved, from other initial weights
    result.update(fsdp_job(out, fsdp, checkpoint=out / "state"))
    _write(acc, out, "fsdp" if fsdp else "plain", result)
    return result


if __name__ == "__main__":
    target = Path(sys.argv[1])
    ddp_job(target)
    fsdp_job(target, fsdp="WORLD_SIZE" in __import__("os").environ)
