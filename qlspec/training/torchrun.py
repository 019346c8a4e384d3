"""Whether torchrun started this process: a check of its environment that imports nothing heavy, so
commands that never train (plan, a no-op apply) can ask it without importing torch."""

from __future__ import annotations

import os

__all__ = ["started_by_torchrun"]

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def started_by_torchrun() -> bool:
    """Whether torchrun started this process as one of several (its rendezvous variables are set)."""
    if not all(v in os.environ for v in _TORCHRUN_VARS):
        return False
    try:
        return int(os.environ["WORLD_SIZE"]) > 1
    except ValueError:
        return False
