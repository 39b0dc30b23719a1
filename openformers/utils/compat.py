"""The Hugging Face releases whose public API openformers follows."""
from __future__ import annotations

# package -> the release its names, arguments and defaults are taken from
API_VERSIONS: dict[str, str] = {
    "transformers": "5.23.0",
    "datasets": "5.2.0",
    "peft": "0.21.2",
    "evaluate": "0.4.6",
    "accelerate": "1.16.0",
    "trl": "1.16.0",
}


def check_min_version(min_version: str) -> None:
    """Scripts call ``check_min_version("4.57.0.dev0")`` against transformers: pass when openformers
    follows that transformers release or a newer one, else say which release is followed."""
    from packaging.version import Version

    have = API_VERSIONS["transformers"]
    if Version(min_version) > Version(have):
        raise ImportError(
            f"this script asks for transformers >= {min_version}; openformers follows the API of transformers "
            f"{have}. Names added after {have} may be missing: run it and see which one, or lower the check."
        )
