"""Start a real OpenSSH server on loopback for tests and benchmarks (no pytest needed here).

    server = SshServer.create(Path(tempfile.mkdtemp()))
    server.start()
    ...  # server.port, server.host_key_fingerprint, server.client_key_text, server.known_hosts_path
    server.stop()

The server runs ``/usr/sbin/sshd -D -e -f <config>`` on a free 127.0.0.1 port, with its own host key
and an ``AuthorizedKeysFile`` holding a client key generated for it; both are made by ssh-keygen in the
given directory. It needs root (sshd's privilege separation); :func:`unavailable_reason` says why it
cannot run here, for a skip message. :func:`create_password_user` adds a throwaway local account with a
random password for password-login tests (root only); remove it with :func:`delete_user`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
PRIVSEP_DIR = Path("/run/sshd")


def unavailable_reason() -> str | None:
    """Why a test sshd cannot run on this machine, or None when it can."""
    if not SSHD.exists():
        return f"{SSHD} is not installed (apt-get install openssh-server)"
    if not Path(SSH_KEYGEN).exists():
        return "ssh-keygen is not installed (apt-get install openssh-client)"
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "sshd needs root to run (privilege separation); the SFTP server tests run as root in CI"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def keygen(path: Path, *, passphrase: str = "", kind: str = "ed25519") -> str:
    """Generate a key pair at ``path`` / ``path.pub``; return the private key's text."""
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", kind, "-N", passphrase, "-C", "grocerysync-test", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path.read_text()


def fingerprint(pub_path: Path) -> str:
    """The ``SHA256:...`` fingerprint of a public key file, as ``ssh-keygen -lf`` prints it."""
    out = subprocess.run([SSH_KEYGEN, "-lf", str(pub_path)], check=True, capture_output=True, text=True).stdout
    return out.split()[1]


@dataclass
class SshServer:
    """A test OpenSSH server: its port, host key, client key and process."""

    workdir: Path
    port: int
    host_key_fingerprint: str
    host_pub_line: str
    client_key_path: Path
    client_key_text: str
    password_auth: bool = False
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @classmethod
    def create(cls, workdir: Path, *, port: int | None = None, password_auth: bool = False) -> SshServer:
        """Generate keys and a config in ``workdir`` (not started yet)."""
        workdir.mkdir(parents=True, exist_ok=True)
        host_key = workdir / "ssh_host_ed25519_key"
        keygen(host_key)
        client_key = workdir / "client_ed25519"
        client_text = keygen(client_key)
        (workdir / "authorized_keys").write_text(Path(f"{client_key}.pub").read_text())
        (workdir / "authorized_keys").chmod(0o644)
        pub = Path(f"{host_key}.pub").read_text().split()
        server = cls(
            workdir=workdir,
            port=port or free_port(),
            host_key_fingerprint=fingerprint(Path(f"{host_key}.pub")),
            host_pub_line=f"{pub[0]} {pub[1]}",
            client_key_path=client_key,
            client_key_text=client_text,
            password_auth=password_auth,
        )
        server.write_config()
        return server

    @property
    def config_path(self) -> Path:
        return self.workdir / "sshd_config"

    @property
    def log_path(self) -> Path:
        """sshd's own log (``-e`` sends it to stderr, which goes here)."""
        return self.workdir / "sshd.log"

    @property
    def known_hosts_path(self) -> Path:
        """A known_hosts file trusting this server's host key at its address and port."""
        path = self.workdir / "known_hosts"
        path.write_text(f"[{self.host}]:{self.port} {self.host_pub_line}\n")
        return path

    def write_config(self) -> None:
        """Write sshd_config for this server and have sshd check it (``sshd -t``)."""
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        lines = [
            f"ListenAddress {self.host}:{self.port}",
            f"HostKey {self.workdir / 'ssh_host_ed25519_key'}",
            f"PidFile {self.workdir / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.workdir / 'authorized_keys'}",
            "StrictModes no",
            "UsePAM no",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            f"PasswordAuthentication {'yes' if self.password_auth else 'no'}",
            "KbdInteractiveAuthentication no",
            "PermitEmptyPasswords no",
            "X11Forwarding no",
            "AllowTcpForwarding no",
            "MaxStartups 100",
            "MaxAuthTries 10",
            "LoginGraceTime 30",
            "LogLevel VERBOSE",
            "Subsystem sftp internal-sftp",
        ]
        self.config_path.write_text("\n".join(lines) + "\n")
        # OpenSSH 9.8+ blocks an address for a while after failed logins: tests fail logins on purpose.
        self.config_path.write_text(self.config_path.read_text() + "PerSourcePenalties no\n")
        if subprocess.run([str(SSHD), "-t", "-f", str(self.config_path)], capture_output=True).returncode != 0:
            self.config_path.write_text("\n".join(lines) + "\n")
        check = subprocess.run([str(SSHD), "-t", "-f", str(self.config_path)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"sshd refuses the test configuration: {check.stderr.strip()}")

    def start(self, timeout: float = 10.0) -> None:
        """Start sshd and wait until its port accepts connections."""
        if self.running:
            return
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.process.returncode}: {self.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.5):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd did not accept connections on {self.host}:{self.port} in {timeout} s")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Stop sshd and every session it serves (as a dropped connection looks to a client)."""
        if self.process is None:
            return
        # Sessions are sshd's child processes and outlive the listener: end them by their ids first.
        for pid in _descendants(self.process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None
        (self.workdir / "sshd.pid").unlink(missing_ok=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no sshd log)"

    def __enter__(self) -> SshServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _descendants(root: int) -> list[int]:
    """Ids of the processes below ``root`` (Linux /proc), deepest last."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@dataclass(frozen=True)
class TestUser:
    """A throwaway local account for password logins."""

    name: str
    password: str
    home: Path


def create_password_user(prefix: str = "gst") -> TestUser:
    """Create a local user with a random password and a private home folder it owns (root only)."""
    name = f"{prefix}{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(18)
    home = Path("/tmp") / f"{name}-home"
    subprocess.run(
        ["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    try:
        home.mkdir(mode=0o700)
        shutil.chown(home, user=name, group=name)
        subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True, capture_output=True)
    except BaseException:
        delete_user(TestUser(name, password, home))
        raise
    return TestUser(name, password, home)


def delete_user(user: TestUser) -> None:
    """Remove the account and its home folder."""
    subprocess.run(["userdel", user.name], capture_output=True, check=False)
    shutil.rmtree(user.home, ignore_errors=True)
