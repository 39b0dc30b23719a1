"""``DatasetInfo``: descriptive metadata saved next to the data in ``dataset_info.json``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .features import Features


@dataclass
class DatasetInfo:
    """Descriptive metadata saved next to the data in ``dataset_info.json``."""

    description: str = ""
    citation: str = ""
    homepage: str = ""
    license: str = ""
    features: Features | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = {"citation": self.citation, "description": self.description}
        if self.features is not None:
            out["features"] = self.features.to_dict()
        out.update({"homepage": self.homepage, "license": self.license})
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DatasetInfo":
        known = {"description", "citation", "homepage", "license", "features"}
        feats = Features.from_dict(d["features"]) if d.get("features") else None
        return cls(description=d.get("description", "") or "", citation=d.get("citation", "") or "",
                   homepage=d.get("homepage", "") or "", license=d.get("license", "") or "",
                   features=feats, extra={k: v for k, v in d.items() if k not in known})
