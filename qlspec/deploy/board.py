"""The application's folder on the board: content-addressed releases, an atomic `current` link.

    <path>/releases/<id>/       one per distinct build; <id> = digest of its files (release_id)
                 bin/qlspec-net, bin/weights.bin, MANIFEST.sha256, and .installed once it passed the
                 install check (the binary loads, with ARM-CL, on the board)
    <path>/current -> releases/<id>     switched by rename, so it is always a whole release
    <path>/history                      the release ids that were made current, oldest first
    <path>/runs/<stamp>/                inputs and outputs of the runs on the sample images
    <path>/.upload-<id>-<nonce>/        an upload in progress; renamed into releases/ when complete
    <path>/.deploy-lock/                held by the deploy or rollback in progress (`Board.locked`)

An upload goes to a fresh folder and is checked (sha256sum) before it is renamed into place; a
release becomes current only after it ran on the sample images and matched, so a failure at any
step leaves the previous release current and runnable. One deploy or rollback works on a board's
folder at a time (`Board.locked`): a second one, from this machine or another, stops at once with
the holder's name instead of pruning the first one's upload or switching `current` under it.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shlex
import socket
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from qlspec.codegen.build import APP, BINARY
from qlspec.deploy.ssh import Remote, where
from qlspec.errors import DeployError, first_line

PROJECT_SKIP = ("bin", "out", "build.log", "lowering.json")
LOCK_STEPS, LOCK_MIN_S = 20, 3600  # a deploy lock expires after 20 command time-outs, at least an hour
HISTORY_LINES = 1000  # the history file keeps this many of its last lines


def release_files(armcl: Path, install: str) -> dict[str, Path]:
    """What goes to the board, by path inside the release: the cross-built binary and its weights
    ('push'), or the CMake project to build there ('build')."""
    if install == "push":
        return {f"bin/{name}": armcl / "bin" / name for name in (BINARY, APP, "weights.bin")}
    return {
        str(f.relative_to(armcl)): f for f in sorted(armcl.rglob("*")) if f.is_file() and f.relative_to(armcl).parts[0] not in PROJECT_SKIP
    }


def release_id(files: Mapping[str, Path], install: str) -> str:
    """16 hex digits of the sha256 over the install mode and every file's path and bytes."""
    h = hashlib.sha256(install.encode() + b"\0")
    for rel in sorted(files):
        h.update(rel.encode() + b"\0" + hashlib.sha256(files[rel].read_bytes()).digest())
    return h.hexdigest()[:16]


def manifest(files: Mapping[str, Path]) -> str:
    """sha256sum's own format, so the board checks the upload with `sha256sum -c`."""
    return "".join(f"{hashlib.sha256(files[rel].read_bytes()).hexdigest()}  {rel}\n" for rel in sorted(files))


def q(path: str) -> str:
    return shlex.quote(path)


@dataclass(frozen=True)
class Board:
    """The app folder `root` (absolute) on a connected board."""

    remote: Remote
    root: str

    @classmethod
    def open(cls, remote: Remote) -> Board:
        path = remote.deploy.path
        if path.startswith("~/"):
            _, home, _ = remote.run('printf %s "$HOME"', "find the home folder")
            path = home.rstrip("/") + path[1:]
        remote.run(f"mkdir -p {q(path)}/releases {q(path)}/runs", "create the app folder")
        return cls(remote, path.rstrip("/"))

    def release(self, rid: str) -> str:
        return f"{self.root}/releases/{rid}"

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold ``<root>/.deploy-lock`` for the block, or raise `DeployError` naming its holder.

        ``mkdir`` is atomic on the board's filesystem, so of two deploys only one creates the folder;
        it records ``owner`` (a token, this machine's name and process) and ``expires`` (by the
        board's clock: `LOCK_STEPS` times deploy.command_timeout from now, at least `LOCK_MIN_S`,
        since every command of a deploy is bounded by that time-out). A lock past its expiry
        belongs to a deploy that died without releasing it, and is taken over; so is one whose
        ``expires`` is missing or not a number, `LOCK_MIN_S` after the folder was made. Released only
        by its owner's token.
        """
        lock = f"{self.root}/.deploy-lock"
        token = secrets.token_hex(8)
        owner = f"{token} {socket.gethostname()} pid {os.getpid()}"
        hold = max(LOCK_MIN_S, int(LOCK_STEPS * self.remote.deploy.command_timeout))
        script = [
            f"now=$(date +%s); l={q(lock)}",
            # a lock's expiry; one without a readable expiry (its deploy died before writing it) expires LOCK_MIN_S after it was made
            f'expiry() {{ e=$(cat "$l/expires" 2>/dev/null); case "$e" in ""|*[!0-9]*) e=$(( $(stat -c %Y "$l" 2>/dev/null || echo "$now") + {LOCK_MIN_S} )) ;; esac; echo "$e"; }}',
            'if mkdir "$l" 2>/dev/null || { [ "$now" -gt "$(expiry)" ] && rm -rf "$l" && mkdir "$l"; }; then',
            f'  echo $((now + {hold})) > "$l/expires" && printf %s {q(owner)} > "$l/owner" && echo taken',
            "else",
            '  echo busy; cat "$l/owner" 2>/dev/null; echo; echo $(( $(expiry) - now ))',
            "fi",
        ]
        _, out, _ = self.remote.run("\n".join(script), "take the deploy lock")
        lines = out.splitlines()
        if not lines or lines[0] != "taken":
            holder = " ".join(lines[1].split()[1:]) if len(lines) > 1 and lines[1].strip() else "unknown"
            left = lines[2].strip() if len(lines) > 2 else "?"
            raise DeployError(
                f"the board is busy: another deploy ({holder}) holds {lock}; try again when it ends "
                f"(it expires in {left} s, should that deploy have died)",
                where=where(self.remote.deploy),
            )
        try:
            yield
        finally:
            try:
                self.remote.run(
                    f'l={q(lock)}; [ "$(cut -d" " -f1 "$l/owner" 2>/dev/null)" != {q(token)} ] || rm -rf "$l"',
                    "release the deploy lock",
                    check=False,
                )
            except DeployError:
                pass  # the connection is gone: the error that ended the block is the one to report; the lock goes stale

    def installed(self) -> list[str]:
        """Ids of the complete releases on the board."""
        _, out, _ = self.remote.run(
            f'cd {q(self.root)}/releases && for d in */; do [ -e "$d.installed" ] && printf \'%s\\n\' "${{d%/}}"; done; true',
            "list the releases",
        )
        return out.split()

    def current(self) -> str | None:
        _, out, _ = self.remote.run(f"readlink {q(self.root)}/current || true", "read the current release")
        name = out.strip().rsplit("/", 1)[-1]
        return name or None

    def history(self) -> list[str]:
        _, out, _ = self.remote.run(f"cat {q(self.root)}/history 2>/dev/null || true", "read the release history")
        return out.split()

    def free_bytes(self) -> int:
        _, out, _ = self.remote.run(f"df -Pk {q(self.root)} | tail -n 1", "measure free space")
        try:
            return int(out.split()[3]) * 1024
        except (IndexError, ValueError):
            raise DeployError(f"cannot read free space from df: {out.strip()[:120]!r}", where=where(self.remote.deploy)) from None

    # ---------------------------------------------------------------------------------------------
    # upload and install

    def upload(self, rid: str, files: Mapping[str, Path]) -> int:
        """Upload, check and install release `rid` unless it is on the board already; returns the bytes sent."""
        if rid in self.installed():
            return 0
        need = sum(f.stat().st_size for f in files.values())
        free = self.free_bytes()
        if free < need + (1 << 20):
            raise DeployError(
                f"the board's disk is full: {free / 2**20:.1f} MiB free at {self.root}, the release needs "
                f"{need / 2**20:.1f} MiB (+1 MiB to run)",
                where=where(self.remote.deploy),
            )
        staging = f"{self.root}/.upload-{rid}-{secrets.token_hex(4)}"
        try:
            self._send(staging, files)
            self.remote.run(f"cd {q(staging)} && sha256sum --quiet -c MANIFEST.sha256", "check the upload")
            if self.remote.deploy.install == "build":
                self._build_on_board(staging)
            self._check_runs(staging)
            self.remote.run(
                f"touch {q(staging)}/.installed && rm -rf {q(self.release(rid))} && mv {q(staging)} {q(self.release(rid))}",
                "install the release",
            )
        except BaseException:
            self.remote.run(f"rm -rf {q(staging)}", "remove the failed upload", check=False)
            raise
        return need

    def _send(self, staging: str, files: Mapping[str, Path]) -> None:
        folders = sorted({str(Path(rel).parent) for rel in files} | {"."})
        self.remote.run("mkdir -p " + " ".join(q(f"{staging}/{d}") for d in folders), "create the upload folder")
        sftp = self.remote.conn.sftp()
        for rel, local in sorted(files.items()):
            try:
                sftp.put(str(local), f"{staging}/{rel}")
                sftp.chmod(f"{staging}/{rel}", local.stat().st_mode & 0o777)
            except OSError as e:
                free = self.free_bytes()
                hint = f"; the board has {free / 2**20:.1f} MiB free at {self.root}" if free < (4 << 20) else ""
                raise DeployError(
                    f"upload of {rel} failed ({e.__class__.__name__}: {str(e)[:120] or 'no reason given'}){hint}",
                    where=where(self.remote.deploy),
                ) from None
        with sftp.open(f"{staging}/MANIFEST.sha256", "w") as fh:
            fh.write(manifest(files))

    def _build_on_board(self, staging: str) -> None:
        args = " ".join(q(a) for a in self.remote.deploy.cmake_args)
        self.remote.run(
            f"cd {q(staging)} && cmake -S . -B out -DCMAKE_BUILD_TYPE=Release {args} > build.log 2>&1 && "
            f'cmake --build out -j "$(nproc)" >> build.log 2>&1 && '
            f"mkdir -p bin && cp out/{BINARY} out/{APP} weights.bin bin/ "
            f"|| {{ tail -n 20 build.log >&2; exit 1; }}",
            "build on the board (cmake)",
        )

    @property
    def launcher(self) -> str:
        """deploy.launcher as shell words, each quoted."""
        return " ".join(q(word) for word in shlex.split(self.remote.deploy.launcher))

    def _check_runs(self, release: str) -> None:
        """The binary loads on the board: the right architecture, and ARM-CL's shared libraries present."""
        code, out, err = self.remote.run(f"cd {q(release)} && {self.launcher} ./bin/{BINARY} --info", "check the app starts", check=False)
        if code == 0:
            return
        message = first_line(err or out)
        if "libarm_compute" in err:
            raise DeployError(
                f"the board has no ARM Compute Library ({message}): install it there "
                "(Raspberry Pi OS or Debian: sudo apt install libarm-compute-dev)",
                where=where(self.remote.deploy),
            )
        if "exec format error" in err.lower() or "cannot execute binary" in err.lower():
            raise DeployError(
                f"the board cannot run an aarch64 binary ({message}); set deploy.launcher for an emulator", where=where(self.remote.deploy)
            )
        raise DeployError(f"the app does not start on the board (exit {code}): {message}", where=where(self.remote.deploy))

    # ---------------------------------------------------------------------------------------------
    # run, switch, prune

    def run_app(
        self,
        rid: str,
        program: str,
        uploads: Iterable[tuple[Path, str]],
        arguments: list[str],
        *,
        threads: int,
        repeat: int,
        fetch_to: Path,
        fetch: tuple[str, ...],
    ) -> str:
        """Run `program` (bin/qlspec-net or bin/qlspec-app) of release `rid` in a fresh run folder on the
        board: each local file of `uploads` is sent there under its name, ``{run}`` in `arguments`
        stands for that folder; the files named in `fetch` come back into `fetch_to`. Returns the run
        folder on the board."""
        _, stamp, _ = self.remote.run("date -u +%Y%m%dT%H%M%SZ", "read the board's clock")
        run = f"{self.root}/runs/{stamp.strip()}-{rid[:8]}-{secrets.token_hex(3)}"
        self.remote.run(f"mkdir -p {q(run)}", "create the run folder")
        sftp = self.remote.conn.sftp()
        for local, name in uploads:
            try:
                sftp.put(str(local), f"{run}/{name}")
            except OSError as e:
                raise DeployError(
                    f"upload of the sample inputs failed ({e.__class__.__name__}: {str(e)[:120]})", where=where(self.remote.deploy)
                ) from None
        words = " ".join(q(a.replace("{run}", run)) for a in arguments)
        self.remote.run(
            f"cd {q(self.release(rid))} && {self.launcher} ./bin/{program} --weights bin/weights.bin "
            f"--threads {threads} --repeat {repeat} --out {q(run)} {words}",
            f"run {program} (release {rid})",
        )
        fetch_to.mkdir(parents=True, exist_ok=True)
        for name in fetch:
            try:
                sftp.get(f"{run}/{name}", str(fetch_to / name))
            except OSError as e:
                raise DeployError(
                    f"{program} wrote no {name} on the board ({e.__class__.__name__})", where=where(self.remote.deploy)
                ) from None
        return run

    def make_current(self, rid: str) -> None:
        """Point `current` at release `rid` by renaming a fresh link over it (atomic), and record it."""
        link = f"{self.root}/.current-{secrets.token_hex(4)}"
        self.remote.run(
            f"ln -sfn releases/{q(rid)} {q(link)} && mv -T {q(link)} {q(self.root)}/current && echo {q(rid)} >> {q(self.root)}/history",
            "switch the current release",
        )

    def prune(self, keep: int) -> list[str]:
        """Remove releases beyond the `keep` most recently current (never the current one), runs beyond
        the last `keep`, stale uploads and all but the last `HISTORY_LINES` lines of the history;
        returns the removed release ids."""
        order: list[str] = []
        for rid in reversed(self.history()):
            if rid not in order:
                order.append(rid)
        kept = set(order[:keep]) | {self.current()}
        gone = [rid for rid in self.installed() if rid not in kept]
        targets = [q(self.release(rid)) for rid in gone]
        self.remote.run(
            f"cd {q(self.root)} && rm -rf {' '.join(targets)} .upload-* && "
            f"ls -1d runs/*/ 2>/dev/null | sort | head -n -{keep} | xargs -r rm -rf && "
            f"{{ [ ! -f history ] || {{ tail -n {HISTORY_LINES} history > .history-new && mv -f .history-new history; }}; }}",
            "remove old releases",
        )
        return gone

    def rollback(self) -> tuple[str, str]:
        """Make the release current before the current one again; returns (from, to)."""
        now = self.current()
        present = set(self.installed())
        earlier = [rid for rid in reversed(self.history()) if rid != now and rid in present]
        if now is None or not earlier:
            raise DeployError(
                f"nothing to roll back to: current release {now or 'none'}, no earlier release on the board "
                f"(kept: {', '.join(sorted(present)) or 'none'})",
                where=where(self.remote.deploy),
            )
        self._check_runs(self.release(earlier[0]))
        self.make_current(earlier[0])
        return now, earlier[0]
