"""An SSH connection to the board (fabric over paramiko) whose host key is always verified.

Fabric on its own trusts any host key it has not seen (paramiko's AutoAddPolicy) and reads no
known_hosts file. Here the spec's `deploy.known_hosts` is the only source of trust: an unknown key is
refused with its fingerprint unless the user passed ``--trust-new-host-key`` (then its line is
appended to that file), and a key that differs from the recorded one is always refused, as OpenSSH
does. Every failure to connect becomes one `DeployError` naming ``user@host:port`` and what to do; no
password, passphrase or key material is ever part of a message.
"""

from __future__ import annotations

import shlex
import socket
from dataclasses import dataclass
from pathlib import Path

import paramiko
from fabric import Config, Connection
from invoke.exceptions import CommandTimedOut

from qlspec.errors import DeployError, first_line
from qlspec.spec.models import Deploy


class UnknownHostKey(paramiko.SSHException):
    def __init__(self, hostname: str, key: paramiko.PKey) -> None:
        super().__init__(f"unknown host key for {hostname}")
        self.hostname, self.key = hostname, key


class _Refuse(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client, hostname, key):
        raise UnknownHostKey(hostname, key)


@dataclass(frozen=True)
class _TrustAndRecord(paramiko.MissingHostKeyPolicy):
    """Accept a key never seen for this host, and append it to the known_hosts file."""

    known_hosts: Path

    def missing_host_key(self, client, hostname, key):
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        with self.known_hosts.open("a") as fh:
            fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        client.get_host_keys().add(hostname, key.get_name(), key)


def local_path(value: str, base_dir: Path) -> Path:
    """A path named in the spec: ~ expanded, relative paths against the spec's folder."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_dir / path


def where(deploy: Deploy) -> str:
    return f"{deploy.user}@{deploy.host}:{deploy.port}"


def connect(deploy: Deploy, base_dir: Path, *, trust_new_host_key: bool = False) -> Connection:
    """An open connection to the board, its host key verified against `deploy.known_hosts`."""
    known = local_path(deploy.known_hosts, base_dir)
    key = local_path(deploy.key, base_dir) if deploy.key else None
    if key is not None and not key.is_file():
        raise DeployError(f"key file not found: {key} (deploy.key; null to use ssh-agent only)", where=where(deploy))
    if not known.is_file() and not trust_new_host_key:
        raise DeployError(
            f"no known_hosts file at {known} (deploy.known_hosts): add the board's key with ssh-keyscan, "
            "or rerun with --trust-new-host-key after checking its fingerprint",
            where=where(deploy),
        )
    conn = Connection(
        deploy.host,
        user=deploy.user,
        port=deploy.port,
        connect_timeout=deploy.connect_timeout,
        config=Config(overrides={"load_ssh_configs": False}),
        connect_kwargs={
            "key_filename": [str(key)] if key else None,
            "passphrase": deploy.passphrase,
            "password": deploy.password,
            "allow_agent": deploy.agent,
            "look_for_keys": False,
            "banner_timeout": deploy.connect_timeout,
            "auth_timeout": deploy.connect_timeout,
        },
    )
    if known.is_file():
        conn.client.load_host_keys(str(known))
    conn.client.set_missing_host_key_policy(_TrustAndRecord(known) if trust_new_host_key else _Refuse())
    try:
        conn.open()
    except UnknownHostKey as e:
        raise DeployError(
            f"unknown host key {e.key.get_name()} {e.key.fingerprint} for {e.hostname}, not in {known}: "
            "check it on the board (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) and rerun with "
            "--trust-new-host-key",
            where=where(deploy),
        ) from None
    except paramiko.BadHostKeyException as e:
        raise DeployError(
            f"the host key has CHANGED ({e.key.get_name()} {e.key.fingerprint}; {known} has "
            f"{e.expected_key.fingerprint}): refused. If the board was reinstalled, remove the old key with "
            f"ssh-keygen -R '{_known_name(deploy)}' -f {known}",
            where=where(deploy),
        ) from None
    except paramiko.PasswordRequiredException:
        raise DeployError(f"the key {key} is encrypted: set deploy.passphrase or add it to ssh-agent", where=where(deploy)) from None
    except paramiko.AuthenticationException:
        offered = f"key {key}" if key else "no key file"
        offered += " and ssh-agent's keys" if deploy.agent else ""
        offered += " and a password" if deploy.password else ""
        raise DeployError(
            f"the board refused the login ({offered}): add the public key to ~{deploy.user}/.ssh/authorized_keys on the board",
            where=where(deploy),
        ) from None
    except socket.gaierror as e:
        raise DeployError(f"unknown host name {deploy.host!r} ({e.strerror})", where=where(deploy)) from None
    except paramiko.ssh_exception.NoValidConnectionsError:
        raise DeployError(
            "cannot connect: connection refused (is the board on, and sshd listening on this port?)", where=where(deploy)
        ) from None
    except TimeoutError:
        raise DeployError(
            f"no answer within {deploy.connect_timeout:g} s (deploy.connect_timeout): unreachable host", where=where(deploy)
        ) from None
    except (paramiko.SSHException, OSError, EOFError) as e:
        raise DeployError(f"SSH failed: {e.__class__.__name__}: {str(e)[:200]}", where=where(deploy)) from None
    return conn


def _known_name(deploy: Deploy) -> str:
    return deploy.host if deploy.port == 22 else f"[{deploy.host}]:{deploy.port}"


@dataclass(frozen=True)
class Remote:
    """Runs commands on the open connection; a failure or time-out is a `DeployError` saying which step."""

    conn: Connection
    deploy: Deploy

    def run(self, command: str, step: str, *, timeout: float | None = None, check: bool = True) -> tuple[int, str, str]:
        """(exit status, stdout, stderr) of `command` run by the board's shell; `timeout` defaults to
        deploy.command_timeout and is enforced on the board too (coreutils `timeout`)."""
        limit = timeout or self.deploy.command_timeout
        try:
            r = self.conn.run(
                f"timeout -k 5 {limit:g} sh -c {shlex.quote(command)}", hide=True, warn=True, in_stream=False, timeout=limit + 30
            )
        except CommandTimedOut:
            raise DeployError(f"{step}: took more than {limit:g} s (deploy.command_timeout)", where=where(self.deploy)) from None
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise DeployError(f"{step}: the connection failed ({e.__class__.__name__}: {str(e)[:200]})", where=where(self.deploy)) from None
        if r.exited == 124:
            raise DeployError(f"{step}: took more than {limit:g} s (deploy.command_timeout)", where=where(self.deploy))
        if check and r.exited != 0:
            raise DeployError(f"{step} failed (exit {r.exited}): {first_line(r.stderr or r.stdout)}", where=where(self.deploy))
        return r.exited, r.stdout, r.stderr
