"""Deployment to the board over SSH with fabric: `ssh` (connection, verified host keys, located
errors), `board` (the release folder layout on the board). The deploy stage (`qlspec.stages.deploy`)
uploads, runs and switches; `rollback` is `qlspec deploy --rollback`."""

from __future__ import annotations

from pathlib import Path

from qlspec.spec.models import Deploy


def rollback(deploy: Deploy, base_dir: Path, *, trust_new_host_key: bool = False) -> tuple[str, str]:
    """Make the release that was current before the current one current again, after checking it
    still starts; returns (from, to) release ids."""
    from qlspec.deploy.board import Board
    from qlspec.deploy.ssh import Remote, connect

    conn = connect(deploy, base_dir, trust_new_host_key=trust_new_host_key)
    try:
        board = Board.open(Remote(conn, deploy))
        with board.locked():
            return board.rollback()
    finally:
        conn.close()
