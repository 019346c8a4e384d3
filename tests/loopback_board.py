"""A real OpenSSH server on 127.0.0.1 as the board for deploy tests (Debian's openssh-server,
installed by scripts/install.sh).

Each `LoopbackBoard` has its own throw-away host key and client key pair, listens on a free port,
accepts only that client key for the current user, and runs in a private mount namespace, where a
`setup` script may shape the board (a small tmpfs as a full disk, no ARM-CL libraries). The board
runs the aarch64 app through qemu-aarch64, as the spec's `deploy.launcher` says.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"
LAUNCHER = "qemu-aarch64 -cpu cortex-a72 -L /"


def keygen(path: Path) -> Path:
    """A fresh ed25519 key pair without passphrase at `path` (and `path`.pub), replacing any there."""
    path.unlink(missing_ok=True)
    Path(f"{path}.pub").unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "qlspec-test", "-f", str(path)], check=True)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LoopbackBoard:
    folder: Path  # the board's files: keys, config, and home/ for the app
    setup: str = ""  # bash run in sshd's mount namespace before it starts
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        if shutil.which("ssh-keygen") is None or not Path(SSHD).exists():
            pytest.skip("OpenSSH server not installed (scripts/install.sh installs it)")
        if os.geteuid() != 0:
            pytest.skip("the loopback sshd runs as root (privilege separation)")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.host_key = keygen(self.folder / "host_ed25519")
        self.client_key = keygen(self.folder / "client_ed25519")
        (self.folder / "authorized_keys").write_text(Path(f"{self.client_key}.pub").read_text())
        self.home = self.folder / "home"
        self.home.mkdir(exist_ok=True)
        self.known_hosts = self.folder / "known_hosts"
        self.trust()

    @property
    def user(self) -> str:
        return getpass.getuser()

    def trust(self, key: Path | None = None) -> None:
        """Write known_hosts with this board's host key (or `key`'s), as ssh-keyscan would."""
        public = Path(f"{key or self.host_key}.pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {public[0]} {public[1]}\n")

    def start(self) -> LoopbackBoard:
        config = self.folder / "sshd_config"
        config.write_text(f"""\
Port {self.port}
ListenAddress 127.0.0.1
HostKey {self.host_key}
PidFile {self.folder / "sshd.pid"}
AuthorizedKeysFile {self.folder / "authorized_keys"}
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
LogLevel ERROR
""")
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        script = f"set -e\nmount --make-rprivate /\n{self.setup}\nexec {SSHD} -D -e -f {config}"
        self.process = subprocess.Popen(
            ["unshare", "-m", "bash", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.process.stdout.read() if self.process.stdout else ''}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(4).startswith(b"SSH"):
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("sshd did not start within 20 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def deploy_section(self, path: Path | None = None, **extra: object) -> dict:
        """The spec's deploy section for this board (the app folder in the board's home by default)."""
        return {
            "enabled": True,
            "host": "127.0.0.1",
            "port": self.port,
            "user": self.user,
            "key": str(self.client_key),
            "agent": False,
            "known_hosts": str(self.known_hosts),
            "path": str(path or self.home / "app"),
            "launcher": LAUNCHER,
            **extra,
        }

    def shell(self, command: str, path: Path | None = None) -> subprocess.CompletedProcess:
        """Run `command` on the board over ssh (the OpenSSH client, not the code under test)."""
        return subprocess.run(
            [
                "ssh",
                "-p",
                str(self.port),
                "-i",
                str(self.client_key),
                "-o",
                f"UserKnownHostsFile={self.known_hosts}",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                f"{self.user}@127.0.0.1",
                command,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
