"""What a training script prints and saves about a run: ``log_metrics``, ``save_metrics``, the
floating-point operation count, and which process reports. Mixed into :class:`Trainer`."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from torch import nn


def _runtime_text(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    centis = int(round((seconds - int(seconds)) * 100))
    return f"{hours}:{minutes:02d}:{secs:02d}.{min(centis, 99):02d}"


def metrics_format(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics made readable: runtimes as h:mm:ss.cc, ``total_flos`` in GF, floats rounded to 4 digits."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if key.endswith("_runtime") and isinstance(value, (int, float)):
            out[key] = _runtime_text(float(value))
        elif key == "total_flos" and isinstance(value, (int, float)):
            out[key] = f"{int(value) >> 30}GF"
        elif isinstance(value, float):
            out[key] = round(value, 4)
        else:
            out[key] = value
    return out


def floating_point_ops(model: nn.Module, inputs: dict[str, Any]) -> float:
    """Forward and backward floating-point operations of one batch: 6 * tokens * parameters
    (embeddings left out), the estimate the reference reports as ``total_flos``."""
    own = getattr(model, "floating_point_ops", None)
    if callable(own):
        return float(own(inputs))
    base = model
    while not hasattr(base, "num_parameters") and hasattr(base, "module"):
        base = base.module  # DDP / FSDP wrappers
    if not hasattr(base, "num_parameters"):
        return 0.0
    key = getattr(base, "main_input_name", "input_ids")
    tokens = inputs.get(key) if isinstance(inputs, dict) else None
    if tokens is None or not hasattr(tokens, "numel"):
        return 0.0
    return 6.0 * tokens.numel() * base.num_parameters(exclude_embeddings=True)


class ReportingMixin:
    """``log_metrics``, ``save_metrics``, ``metrics_format``, ``floating_point_ops`` and the process checks."""

    def is_local_process_zero(self) -> bool:
        return self.args.local_process_index == 0  # type: ignore[attr-defined]

    def floating_point_ops(self, inputs: dict[str, Any]) -> float:
        return floating_point_ops(self.model, inputs)  # type: ignore[attr-defined]

    def metrics_format(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return metrics_format(metrics)

    def log_metrics(self, split: str, metrics: dict[str, Any]) -> None:
        """Print ``metrics`` of ``split`` ("train", "eval", "test") as an aligned table (main process only)."""
        if not self.is_world_process_zero():  # type: ignore[attr-defined]
            return
        print(f"***** {split} metrics *****")
        shown = metrics_format(metrics)
        width = max((len(k) for k in shown), default=0)
        value_width = max((len(str(v)) for v in shown.values()), default=0)
        for key in sorted(shown):
            print(f"  {key: <{width}} = {shown[key]!s:>{value_width}}")

    def save_metrics(self, split: str, metrics: dict[str, Any], combined: bool = True) -> None:
        """Write ``<output_dir>/<split>_results.json`` (and merge into ``all_results.json`` when ``combined``)."""
        if not self.is_world_process_zero():  # type: ignore[attr-defined]
            return
        out = Path(self.args.output_dir)  # type: ignore[attr-defined]
        out.mkdir(parents=True, exist_ok=True)
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
        (out / f"{split}_results.json").write_text(json.dumps(clean, indent=4, sort_keys=True), encoding="utf-8")
        if combined:
            path = out / "all_results.json"
            merged = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
            merged.update(clean)
            path.write_text(json.dumps(merged, indent=4, sort_keys=True), encoding="utf-8")
