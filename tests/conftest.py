"""Suite-wide fixtures."""
from __future__ import annotations

from typing import Iterator

import pytest

from openformers.core import settings


class _MonkeyPatch(pytest.MonkeyPatch):
    """pytest's ``monkeypatch``, plus :func:`openformers.core.settings.reload` whenever it sets, deletes or
    restores an ``OPENFORMERS_*`` variable, so a test that switches one sees the new value."""

    def setenv(self, name: str, value: str, prepend: str | None = None) -> None:
        super().setenv(name, value, prepend)
        if name.startswith("OPENFORMERS_"):
            settings.reload()

    def delenv(self, name: str, raising: bool = True) -> None:
        super().delenv(name, raising)
        if name.startswith("OPENFORMERS_"):
            settings.reload()

    def undo(self) -> None:
        super().undo()
        settings.reload()


@pytest.fixture
def monkeypatch() -> Iterator[pytest.MonkeyPatch]:
    patch = _MonkeyPatch()
    yield patch
    patch.undo()
