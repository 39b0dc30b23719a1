"""Driver for ``test_dense.py``'s DeepSpeed test: ``python run_dense_zero3.py OUT.json`` in a process of its own.

One process, world size 1 over gloo, DeepSpeed's CPU accelerator: a tiny openformers Llama built under
``deepspeed.zero.Init`` (ZeRO-3: every parameter partitioned, gathered around each module's forward) and the
same model in plain PyTorch, both from the same weights, take the same 3 SGD steps (with momentum; AdamW would
blow rounding differences of near-zero gradients up to the step size). Gradient clipping is off: DeepSpeed's
default clips to norm 1.0. Writes the losses, the final weights of both, and how many oneDNN products
(``modules/dense.py``) each made.
"""
from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ["DS_ACCELERATOR"] = "cpu"
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                  MASTER_PORT=str(port))

import deepspeed  # noqa: E402
import torch  # noqa: E402

import openformers  # noqa: E402
from openformers.modules import dense  # noqa: E402
from tests.models.llama_family import tiny_config  # noqa: E402

CONFIG = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1, "steps_per_print": 10**9,
          "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
          "zero_allow_untested_optimizer": True, "gradient_clipping": 0.0}


def build() -> torch.nn.Module:
    torch.manual_seed(0)
    return openformers.LlamaForCausalLM(openformers.LlamaConfig(**tiny_config()))


def main(out: Path) -> None:
    calls = {"zero3": 0, "plain": 0}
    product, which = dense._product, ["plain"]

    def counted(*args):
        calls[which[0]] += 1
        return product(*args)
    dense._product = counted
    deepspeed.init_distributed(dist_backend="gloo")
    plain = build()
    with deepspeed.zero.Init(config_dict_or_path=CONFIG):
        model = build()
    params = dict(model.named_parameters())
    partitioned = sorted(n for n, p in params.items() if hasattr(p, "ds_id") and p.numel() == 0)
    with deepspeed.zero.GatheredParameters(list(params.values()), modifier_rank=0), torch.no_grad():
        for name, p in plain.named_parameters():
            params[name].copy_(p)
    engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
                                      config=CONFIG)
    opt = torch.optim.SGD(plain.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    losses: dict[str, list[float]] = {"zero3": [], "plain": []}
    for _ in range(3):
        ids = torch.randint(1, 128, (2, 12), generator=g)
        which[0] = "zero3"
        loss = engine(input_ids=ids, labels=ids).loss
        engine.backward(loss)
        engine.step()
        losses["zero3"].append(loss.item())
        which[0] = "plain"
        loss = plain(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses["plain"].append(loss.item())
    with deepspeed.zero.GatheredParameters(list(model.parameters())):
        zero3 = {n: p.detach().clone().tolist() for n, p in model.named_parameters()}
    reference = {n: p.detach().tolist() for n, p in plain.named_parameters()}
    out.write_text(json.dumps({"losses": losses, "calls": calls, "partitioned": partitioned,
                               "names": sorted(params), "zero3": zero3, "plain": reference}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
