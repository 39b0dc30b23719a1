"""Reading the description a family declares (``modules/blocks.py``, ``modules/encoder_blocks.py``), shared by
the runtime's runners: which class declares an attribute, and one debug line for each reason a model runs its
module path instead of a plan.
"""
from __future__ import annotations

import logging

# reasons already logged by why_not (one debug line each)
_LOGGED: set[str] = set()


def why_not(log: logging.Logger, reason: str) -> None:
    """One debug line per reason, on the runtime module's ``log``: why a model runs its module path."""
    if reason not in _LOGGED:
        _LOGGED.add(reason)
        log.debug("runtime: %s; the module path runs", reason)


def declared(cls: type, attribute: str) -> type | None:
    """The class along ``cls``'s MRO that declares ``attribute`` in its own body."""
    return next((c for c in cls.__mro__ if attribute in c.__dict__), None)
