"""Small helpers shared by the simulator's plugin modules."""

from __future__ import annotations

import datetime


def _now() -> datetime.datetime:
    """Now, timezone-aware UTC (what moto's records hold)."""
    return datetime.datetime.now(datetime.timezone.utc)


def _check_moto(present: tuple, absent: tuple = (), module: str = __name__) -> None:
    """Fail loudly if moto moved: the patch points a module relies on (pinned to moto 5.2.5).

    present: (owner, attr) pairs that must exist; absent: (owner, attr) pairs the module adds
    itself, so moto must not define them (then the module needs a review). `module` names the
    caller in the message."""
    for owner, attr in present:
        if not hasattr(owner, attr):
            raise RuntimeError(f"moto changed: {owner.__name__}.{attr} is gone (the simulator is pinned to moto 5.2.5)")
    for owner, attr in absent:
        if attr in vars(owner):
            raise RuntimeError(f"moto changed: it now has {owner.__name__}.{attr}; review {module}")
