"""AdaLoRA: LoRA in SVD form with ranks allocated while training.

Each adapted ``nn.Linear`` gets ``lora_A`` [r, in], ``lora_E`` [r, 1] (the singular values) and
``lora_B`` [out, r]; the output is ``base(x) + x @ (A * E).T @ B.T * scaling / ranknum``.
:class:`RankAllocator` scores every singular triplet by the smoothed sensitivity ``|p * grad|``
of its entries and zeroes the least important ``E`` entries down to a shrinking budget.
Parameter and file names follow the peft package, so adapters load both ways.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from openformers.peft.config import AdaLoraConfig
from openformers.peft.delta import DeltaLinear
from openformers.peft.tuners import LoraModel, _candidate_names, _pattern_value


class AdaLoraLinear(DeltaLinear):
    """``base(x) + dropout(x) @ (lora_A * lora_E).T @ lora_B.T * scaling / (ranknum + 1e-5)``."""

    method = "AdaLoRA"
    adapter_layer_names = ("lora_A", "lora_B", "lora_E")

    def __init__(self, base_layer: nn.Module) -> None:
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"AdaLoRA wraps nn.Linear layers; got {type(base_layer).__name__}")
        super().__init__(base_layer)
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        self.lora_E = nn.ParameterDict()
        self.ranknum = nn.ParameterDict()
        self.lora_dropout = nn.ModuleDict()
        self.r: dict[str, int] = {}
        self.lora_alpha: dict[str, float] = {}
        self.scaling: dict[str, float] = {}

    @classmethod
    def from_base(cls, base_layer: nn.Module, adapter_name: str = "default", r: int = 12, lora_alpha: float = 8,
                  lora_dropout: float = 0.0, init_lora_weights: bool = True) -> "AdaLoraLinear":
        layer = cls(base_layer)
        layer.update_layer(adapter_name, r, lora_alpha, lora_dropout, init_lora_weights)
        layer.set_adapter(adapter_name)
        return layer

    def update_layer(self, adapter_name: str, r: int, lora_alpha: float, lora_dropout: float = 0.0,
                     init_lora_weights: bool = True) -> None:
        """Add (or replace) ``adapter_name`` with ``r`` singular triplets (``r`` may be 0 after pruning)."""
        if not isinstance(r, int) or r < 0:
            raise ValueError(f"AdaLoRA rank must be a non-negative integer, got r={r!r} for adapter {adapter_name!r}")
        w = self.base_layer.weight
        kw = dict(device=w.device, dtype=w.dtype if w.is_floating_point() else torch.float32)
        self.r[adapter_name] = r
        self.lora_alpha[adapter_name] = lora_alpha
        self.scaling[adapter_name] = lora_alpha if lora_alpha > 0 else float(r)
        self.lora_dropout[adapter_name] = nn.Dropout(lora_dropout) if lora_dropout > 0 else nn.Identity()
        self.lora_A[adapter_name] = nn.Parameter(torch.randn(r, self.in_features, **kw))
        self.lora_E[adapter_name] = nn.Parameter(torch.randn(r, 1, **kw))
        self.lora_B[adapter_name] = nn.Parameter(torch.randn(self.out_features, r, **kw))
        self.ranknum[adapter_name] = nn.Parameter(torch.full((1,), float(r), **kw), requires_grad=False)
        if init_lora_weights:
            with torch.no_grad():
                nn.init.zeros_(self.lora_E[adapter_name])
                nn.init.normal_(self.lora_A[adapter_name], mean=0.0, std=0.02)
                nn.init.normal_(self.lora_B[adapter_name], mean=0.0, std=0.02)

    def delete_adapter(self, name: str) -> None:
        super().delete_adapter(name)
        for store in (self.ranknum, self.lora_dropout):
            if name in store:
                del store[name]

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        """``B @ (A * E) * scaling / (ranknum + 1e-5)`` as [out_features, in_features]."""
        return (self.lora_B[adapter_name] @ (self.lora_A[adapter_name] * self.lora_E[adapter_name])
                * self.scaling[adapter_name] / (self.ranknum[adapter_name] + 1e-5))

    def _add_update(self, name: str, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        a, b, e = self.lora_A[name], self.lora_B[name], self.lora_E[name]
        h = self.lora_dropout[name](x.to(a.dtype))
        return result + (h @ (a * e).T @ b.T) * self.scaling[name] / (self.ranknum[name] + 1e-5)


class RankAllocator:
    """Budgeted pruning of AdaLoRA's singular values (one trainable adapter).

    ``update_ipt`` smooths each entry's sensitivity ``|p * p.grad|`` (``exp_avg_ipt``, factor
    ``beta1``) and its uncertainty (``exp_avg_unc``, ``beta2``); a triplet's score is the score of
    its ``E`` entry plus the mean scores of its ``A`` row and ``B`` column. ``mask_to_budget``
    zeroes the ``E`` entries whose score is among the lowest ``init_budget - budget``."""

    def __init__(self, model: nn.Module, peft_config: AdaLoraConfig, adapter_name: str) -> None:
        self.peft_config = peft_config
        self.adapter_name = adapter_name
        self.beta1 = peft_config.beta1
        self.beta2 = peft_config.beta2
        self.reset_ipt()
        self.init_bgt = 0
        names = set()
        for n, p in model.named_parameters():
            if f"lora_A.{adapter_name}" in n:
                self.init_bgt += p.size(0)
                names.add(n.replace("lora_A", "%s"))
        self.name_set = sorted(names)
        self.target_bgt = peft_config.target_r * len(self.name_set)

    def set_total_step(self, total_step: int) -> None:
        self.peft_config.total_step = total_step

    def reset_ipt(self) -> None:
        self.ipt: dict[str, torch.Tensor] = {}
        self.exp_avg_ipt: dict[str, torch.Tensor] = {}
        self.exp_avg_unc: dict[str, torch.Tensor] = {}

    def budget_schedule(self, step: int) -> tuple[int, bool]:
        """(budget, whether to mask now) at ``step``: cubic decay from ``init_bgt`` to ``target_bgt``."""
        c = self.peft_config
        if step <= c.tinit:
            return self.init_bgt, False
        if step > c.total_step - c.tfinal:
            return self.target_bgt, True
        remaining = 1 - (step - c.tinit) / (c.total_step - c.tfinal - c.tinit)
        budget = int((self.init_bgt - self.target_bgt) * remaining ** 3 + self.target_bgt)
        return budget, step % c.deltaT == 0

    def update_ipt(self, model: nn.Module) -> None:
        for n, p in model.named_parameters():
            if "lora_" not in n or self.adapter_name not in n:
                continue
            if p.grad is None:
                raise ValueError(
                    f"RankAllocator: {n} has no gradient; call update_and_allocate after loss.backward() and "
                    "before optimizer.zero_grad()"
                )
            if n not in self.ipt:
                self.ipt[n] = torch.zeros_like(p)
                self.exp_avg_ipt[n] = torch.zeros_like(p)
                self.exp_avg_unc[n] = torch.zeros_like(p)
            with torch.no_grad():
                self.ipt[n] = (p * p.grad).abs().detach()
                self.exp_avg_ipt[n] = self.beta1 * self.exp_avg_ipt[n] + (1 - self.beta1) * self.ipt[n]
                self.exp_avg_unc[n] = self.beta2 * self.exp_avg_unc[n] + (1 - self.beta2) * (
                    self.ipt[n] - self.exp_avg_ipt[n]).abs()

    def _score(self, n: str) -> torch.Tensor:
        return self.exp_avg_ipt[n] * self.exp_avg_unc[n]

    def mask_to_budget(self, model: nn.Module, budget: int) -> dict[str, list[bool]]:
        if not self.exp_avg_ipt:
            raise ValueError("RankAllocator: no importance scores yet; update_and_allocate needs gradients first")
        rows: dict[str, list[torch.Tensor]] = {}
        values: dict[str, torch.Tensor] = {}
        tag = f".{self.adapter_name}"
        for n, _ in model.named_parameters():
            if f"lora_A{tag}" in n:
                rows.setdefault(n.replace("lora_A", "%s"), []).append(self._score(n).mean(dim=1, keepdim=True))
            elif f"lora_B{tag}" in n:
                rows.setdefault(n.replace("lora_B", "%s"), []).append(self._score(n).mean(dim=0).view(-1, 1))
            elif f"lora_E{tag}" in n:
                values[n.replace("lora_E", "%s")] = self._score(n)
        triplet: dict[str, torch.Tensor] = {}
        scores = []
        for key, parts in rows.items():
            total = values[key].view(-1) + torch.cat(parts, dim=1).sum(dim=1).view(-1)
            triplet[key % "lora_E"] = total.view(-1, 1)
            scores.append(total.view(-1))
        threshold = torch.kthvalue(torch.cat(scores), k=self.init_bgt - budget)[0].item()
        rank_pattern = {}
        with torch.no_grad():
            for n, p in model.named_parameters():
                if f"lora_E{tag}" in n:
                    pruned = triplet[n] <= threshold
                    p.masked_fill_(pruned, 0.0)
                    rank_pattern[n] = (~pruned).view(-1).tolist()
        return rank_pattern

    def update_and_allocate(self, model: nn.Module, global_step: int,
                            force_mask: bool = False) -> tuple[int, dict[str, list[bool]] | None]:
        if global_step < self.peft_config.total_step - self.peft_config.tfinal:
            self.update_ipt(model)
        budget, mask_now = self.budget_schedule(global_step)
        return budget, (self.mask_to_budget(model, budget) if mask_now or force_mask else None)

    def mask_using_rank_pattern(self, model: nn.Module, rank_pattern: dict[str, list[bool]]) -> None:
        truncated = self.adapter_name not in next(iter(rank_pattern))
        with torch.no_grad():
            for n, p in model.named_parameters():
                if f"lora_E.{self.adapter_name}" in n:
                    key = n.replace(f".{self.adapter_name}", "") if truncated else n
                    keep = torch.tensor(rank_pattern[key], dtype=torch.bool, device=p.device).unsqueeze(-1)
                    p.masked_fill_(~keep, 0.0)


class AdaLoraModel(LoraModel):
    """The model with AdaLoRA layers at ``target_modules``, its rank allocator and the
    orthogonality penalty added to the loss."""

    def __init__(self, model: nn.Module, peft_config: dict[str, Any], adapter_name: str) -> None:
        super().__init__(model, peft_config, adapter_name)
        trainable = [n for n, c in peft_config.items() if not c.inference_mode]
        if len(trainable) > 1:
            raise ValueError("AdaLoRA trains one adapter at a time; set inference_mode=True for the others")
        self.trainable_adapter_name = adapter_name
        self.rankallocator = RankAllocator(self.model, peft_config[adapter_name], adapter_name)

    def inject_adapter(self, adapter_name: str) -> None:
        config = self.peft_config[adapter_name]
        if not config.inference_mode and getattr(self, "trainable_adapter_name", None) not in (None, adapter_name):
            raise ValueError("AdaLoRA trains one adapter at a time; add further adapters with inference_mode=True")
        super().inject_adapter(adapter_name)

    def _create_or_update(self, adapter_name: str, config: AdaLoraConfig, key: str, module: nn.Module) -> None:
        alpha = _pattern_value(config.alpha_pattern, key, config.lora_alpha)
        if isinstance(module, AdaLoraLinear):
            module.update_layer(adapter_name, config.init_r, alpha, config.lora_dropout, config.init_lora_weights)
            return
        if not isinstance(module, nn.Linear):
            raise ValueError(
                f"target module {key!r} ({type(module).__name__}) is not supported: AdaLoRA wraps nn.Linear layers; "
                f"candidate module names: {_candidate_names(self.model)}"
            )
        self._replace(key, AdaLoraLinear.from_base(module, adapter_name, config.init_r, alpha, config.lora_dropout,
                                                   config.init_lora_weights))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        outputs = self.model(*args, **kwargs)
        loss = getattr(outputs, "loss", None)
        weight = self.peft_config[self.trainable_adapter_name].orth_reg_weight
        if isinstance(loss, torch.Tensor) and weight > 0:
            tag = f".{self.trainable_adapter_name}"
            penalty, count = 0, 0
            for n, p in self.model.named_parameters():
                if (f"lora_A{tag}" in n or f"lora_B{tag}" in n) and n.endswith(tag):
                    cov = p @ p.T if "lora_A" in n else p.T @ p
                    penalty = penalty + torch.linalg.matrix_norm(cov - torch.eye(*cov.shape, dtype=cov.dtype, device=cov.device))
                    count += 1
            if count:
                outputs.loss = loss + weight * penalty / count
        return outputs

    def update_and_allocate(self, global_step: int) -> None:
        """Update importance scores and prune ranks; call after ``loss.backward()`` and before ``zero_grad()``."""
        config = self.peft_config[self.trainable_adapter_name]
        final = config.total_step - config.tfinal
        if global_step < final:
            _, pattern = self.rankallocator.update_and_allocate(self.model, global_step)
            if pattern:
                config.rank_pattern = pattern
        elif global_step == final:
            _, pattern = self.rankallocator.update_and_allocate(self.model, global_step, force_mask=True)
            config.rank_pattern = pattern
            self.rankallocator.reset_ipt()
        elif config.rank_pattern:
            self.rankallocator.mask_using_rank_pattern(self.model, config.rank_pattern)

    def resize_modules_by_rank_pattern(self, rank_pattern: dict[str, list[bool]], adapter_name: str) -> None:
        """Shrink each layer to its kept ranks (before loading a file saved with a ``rank_pattern``)."""
        config = self.peft_config[adapter_name]
        for name, keep in rank_pattern.items():
            key = ".".join(name.split(".")[:-2] if adapter_name in name.split(".") else name.split(".")[:-1])
            try:
                target = self.model.get_submodule(key)
            except AttributeError:
                raise ValueError(f"rank_pattern names {name!r}, which is not an AdaLoRA layer of this model") from None
            if not isinstance(target, AdaLoraLinear) or len(keep) != target.lora_E[adapter_name].shape[0]:
                raise ValueError(f"rank_pattern entry {name!r} does not fit this model's AdaLoRA layer {key!r}")
            idx = torch.tensor(keep, dtype=torch.bool)
            e, a, b = (target.lora_E[adapter_name][idx], target.lora_A[adapter_name][idx],
                       target.lora_B[adapter_name][:, idx])
            ranknum = target.ranknum[adapter_name].detach().clone()
            rank = int(idx.sum())
            target.update_layer(adapter_name, rank, target.lora_alpha[adapter_name], config.lora_dropout,
                                config.init_lora_weights)
            with torch.no_grad():
                if rank > 0:
                    target.lora_E[adapter_name].copy_(e)
                    target.lora_A[adapter_name].copy_(a)
                    target.lora_B[adapter_name].copy_(b)
                    target.ranknum[adapter_name].copy_(ranknum)
        self.set_adapter(self.active_adapter)

    def add_weighted_adapter(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("AdaLoRA does not support add_weighted_adapter; use LoRA adapters")


def resize_state_dict_by_rank_pattern(state: dict[str, torch.Tensor], rank_pattern: dict[str, list[bool]],
                                      adapter_name: str) -> dict[str, torch.Tensor]:
    """Keep only the kept ranks of each layer in a saved state (keys without the adapter name)."""
    out = dict(state)
    for name, keep in rank_pattern.items():
        parts = name.split(".")
        prefix = ".".join(parts[:-2] if adapter_name in parts else parts[:-1])
        idx = torch.tensor(keep, dtype=torch.bool)
        for layer in ("lora_E", "lora_A", "lora_B"):
            key = f"base_model.model.{prefix}.{layer}"
            if key not in out:
                continue
            t = out[key]
            if layer == "lora_B":
                out[key] = t[:, idx] if int(idx.sum()) != t.shape[1] else t
            else:
                out[key] = t[idx] if int(idx.sum()) != t.shape[0] else t
    return out
