"""Every OPENFORMERS_* variable: declared once, parsed one way, read once, listed in the README."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from openformers.core import settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("raw, value", [("1", True), ("true", True), ("YES", True), (" On ", True),
                                        ("0", False), ("False", False), ("no", False), ("OFF", False)])
def test_switches_parse_the_same_everywhere(raw, value) -> None:
    for s in settings.SETTINGS:
        if s.kind in ("switch", "auto-switch"):
            assert s.parse(raw) is value, s.name


def test_unset_or_empty_gives_the_default() -> None:
    assert settings.BY_NAME["OPENFORMERS_NATIVE"].parse(None) is True
    assert settings.BY_NAME["OPENFORMERS_NATIVE"].parse("  ") is True
    assert settings.BY_NAME["OPENFORMERS_ONEDNN_LINEAR"].parse("") is None
    assert settings.BY_NAME["OPENFORMERS_HUB"].parse(None) is None


@pytest.mark.parametrize("name, raw, message", [
    ("OPENFORMERS_NATIVE", "maybe", "OPENFORMERS_NATIVE='maybe' is not a true/false value"),
    ("OPENFORMERS_ONEDNN_LINEAR", "2", "OPENFORMERS_ONEDNN_LINEAR='2' is not a true/false value.*unset it"),
    ("OPENFORMERS_PACKED_WEIGHTS_MAX_MB", "lots", "OPENFORMERS_PACKED_WEIGHTS_MAX_MB='lots' is not a number"),
])
def test_bad_values_name_the_variable(monkeypatch, name, raw, message) -> None:
    monkeypatch.setenv(name, raw)
    with pytest.raises(ValueError, match=message):
        settings.get(name)


def test_paths_and_sizes(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("OPENFORMERS_CACHE", str(tmp_path))
    monkeypatch.delenv("OPENFORMERS_DATA_CACHE", raising=False)
    assert settings.get("OPENFORMERS_CACHE") == tmp_path
    assert settings.get("OPENFORMERS_DATA_CACHE") == tmp_path / "datasets"  # follows the cache root
    monkeypatch.setenv("OPENFORMERS_HUB", "~/hub")
    assert settings.get("OPENFORMERS_HUB") == Path.home() / "hub"
    monkeypatch.setenv("OPENFORMERS_PACKED_WEIGHTS_MAX_MB", "-3")
    assert settings.get("OPENFORMERS_PACKED_WEIGHTS_MAX_MB") == 0.0


def test_read_once_until_reload(monkeypatch) -> None:
    monkeypatch.setenv("OPENFORMERS_NATIVE", "1")
    assert settings.get("OPENFORMERS_NATIVE") is True
    import os

    os.environ["OPENFORMERS_NATIVE"] = "0"  # behind monkeypatch's back: the value read first stays
    assert settings.get("OPENFORMERS_NATIVE") is True
    settings.reload()
    assert settings.get("OPENFORMERS_NATIVE") is False
    monkeypatch.setenv("OPENFORMERS_NATIVE", "on")  # the suite's monkeypatch reloads for us
    assert settings.get("OPENFORMERS_NATIVE") is True


def test_explicit_environment_and_unknown_names() -> None:
    assert settings.parse("OPENFORMERS_REUSE_FREED_MEMORY", {"OPENFORMERS_REUSE_FREED_MEMORY": "no"}) is False
    assert settings.parse("OPENFORMERS_REUSE_FREED_MEMORY", {}) is True
    with pytest.raises(KeyError, match="OPENFORMERS_NATIV is not an openformers setting"):
        settings.get("OPENFORMERS_NATIV")


def test_in_effect_reports_bad_values_without_raising(monkeypatch) -> None:
    monkeypatch.setenv("OPENFORMERS_OFFLINE", "perhaps")
    monkeypatch.setenv("OPENFORMERS_NATIVE", "0")
    now = settings.in_effect()
    assert now["OPENFORMERS_NATIVE"] == {"value": False, "set": True, "raw": "0"}
    assert now["OPENFORMERS_OFFLINE"]["value"].startswith("invalid: OPENFORMERS_OFFLINE='perhaps'")
    assert set(now) == set(settings.BY_NAME)


def test_every_variable_the_package_reads_is_declared() -> None:
    package = ROOT / "openformers"
    found = set()
    for path in package.rglob("*.py"):
        found |= set(re.findall(r"OPENFORMERS_[A-Z0-9_]*[A-Z0-9]", path.read_text()))
    assert found <= set(settings.BY_NAME), sorted(found - set(settings.BY_NAME))


def test_the_readme_table_is_the_generated_one() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- settings table: python -m openformers.core.settings -->\n(.*?)\n<!-- end of settings table -->",
                      readme, flags=re.S)
    assert block, "README.md lacks the settings table markers"
    assert block.group(1).strip() == settings.markdown_table(), \
        "README's settings table is stale: paste the output of `python -m openformers.core.settings`"
    out = subprocess.run([sys.executable, "-m", "openformers.core.settings"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == settings.markdown_table()


def test_the_library_reads_them_through_the_module(monkeypatch, tmp_path) -> None:
    from openformers.core import hub, native
    from openformers.data import arrow_writer
    from openformers.modules import dense
    from openformers.training import allocator
    from openformers.training import hub as training_hub

    monkeypatch.setenv("OPENFORMERS_CACHE", str(tmp_path))
    monkeypatch.setenv("OPENFORMERS_DATA_CACHE", str(tmp_path / "data"))
    monkeypatch.setenv("OPENFORMERS_HUB", str(tmp_path / "hub"))
    monkeypatch.setenv("OPENFORMERS_OFFLINE", "yes")
    monkeypatch.setenv("OPENFORMERS_NATIVE", "off")
    monkeypatch.setenv("OPENFORMERS_ONEDNN_LINEAR", "no")
    monkeypatch.setenv("OPENFORMERS_REUSE_FREED_MEMORY", "false")
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    assert native.cache_dir() == tmp_path / "native" and not native.enabled()
    assert arrow_writer.cache_root() == tmp_path / "data"
    assert hub.local_hub_dirs() == [tmp_path / "hub"] and training_hub.local_hub_root() == tmp_path / "hub"
    assert hub.is_offline()
    assert dense._choice_from_env() is False
    assert allocator.allocator_chosen_by_user()
    monkeypatch.setenv("OPENFORMERS_OFFLINE", "0")
    monkeypatch.setenv("OPENFORMERS_REUSE_FREED_MEMORY", "1")
    monkeypatch.delenv("OPENFORMERS_HUB")
    assert not hub.is_offline() and hub.local_hub_dirs() == []
    assert allocator.allocator_chosen_by_user({}) is False


def test_no_module_reads_an_openformers_variable_itself():
    """Every OPENFORMERS_* variable is read through this module (one parsing everywhere); setting one (the CLI
    passing a flag on to the library) is fine."""
    import re
    from pathlib import Path

    root = Path(settings.__file__).resolve().parents[1]
    name = r"""["']OPENFORMERS_[A-Z0-9_]*["']"""
    read = re.compile(rf"""(environ\.get\(|getenv\(|environ\[)\s*{name}\s*(\](?!\s*=[^=])|,|\))|{name}\s+(not\s+)?in\s+os\.environ""")
    found = [f"{p.relative_to(root)}:{n}" for p in root.rglob("*.py") if p.name != "settings.py"
             for n, line in enumerate(p.read_text().splitlines(), 1) if read.search(line)]
    assert found == []
