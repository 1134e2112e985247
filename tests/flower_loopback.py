"""A Flower deployment on 127.0.0.1 for the tests: one SuperLink and N SuperNodes, each in its own
process group, torn down by process group (never by name).

Usage::

    with Loopback(tmp_path, sites=[dir0, dir1]) as net:
        run_id, log = net.run(APP, {"method": "fedavg", "num-server-rounds": 2})
        assert net.status(run_id) == "finished:completed"
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "flower_app"
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port that is free now on 127.0.0.1 (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def config_value(value: Any) -> str:
    """A run-config value as ``flwr run --run-config`` parses it (TOML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def _processes() -> list[tuple[int, int, int]]:
    """``(pid, parent pid, process group)`` of every process (Linux ``/proc``)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        out.append((int(entry), int(fields[1]), int(fields[2])))
    return out


def descendant_groups(roots: list[int]) -> set[int]:
    """Process groups of ``roots`` and of all their descendants."""
    table = _processes()
    seen, groups, todo = set(), set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        for child, parent, group in table:
            if child == pid:
                groups.add(group)
            if parent == pid:
                todo.append(child)
    return groups


def members(group: int) -> list[int]:
    """PIDs in process group ``group`` (zombies included until reaped)."""
    return [pid for pid, _, g in _processes() if g == group]


class Loopback:
    """SuperLink + one SuperNode per site folder on loopback.

    Parameters
    ----------
    home : Path
        ``FLWR_HOME`` (the CLI's config and the packaged apps) and the processes' logs.
    sites : list of Path
        One data folder per SuperNode (node config ``data-dir``); node ``k`` is
        ``partition-id=k``.
    tls : tuple of Path, optional
        ``(ca.crt, server.pem, server.key)``: the SuperLink serves TLS and the SuperNodes and
        the CLI verify it with the CA certificate; otherwise everything runs ``--insecure``.
    state_dirs : bool, default False
        Give each node a ``state-dir`` under ``home``.
    """

    def __init__(self, home: Path, sites: list[Path], *, tls: tuple[Path, Path, Path] | None = None,
                 state_dirs: bool = False):
        self.home, self.sites, self.tls = Path(home), [Path(s) for s in sites], tls
        self.state_dirs = state_dirs
        self.port = free_port()
        self.env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                    "FLWR_HOME": str(self.home / "flwr"), "FLWR_DISABLE_UPDATE_CHECK": "1",
                    # Flower posts usage events to its own server by default: not from tests
                    "FLWR_TELEMETRY_ENABLED": "0",
                    "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.link: subprocess.Popen | None = None
        self.nodes: dict[int, subprocess.Popen] = {}
        self.groups: set[int] = set()

    # ------------------------------------------------------------------ processes
    def _security(self) -> list[str]:
        return ["--insecure"] if self.tls is None else []

    def _start(self, name: str, command: list[str]) -> subprocess.Popen:
        log = open(self.home / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                cwd=self.home, start_new_session=True)

    def start_node(self, k: int) -> subprocess.Popen:
        config = (f"partition-id={k} num-partitions={len(self.sites)} "
                  f"data-dir={json.dumps(str(self.sites[k]))}")
        if self.state_dirs:
            config += f" state-dir={json.dumps(str(self.home / f'state{k}'))}"
        command = [str(BIN / "flower-supernode"), *self._security(),
                   "--superlink", f"127.0.0.1:{self.port}", "--port", str(free_port()),
                   "--node-config", config]
        if self.tls is not None:
            command += ["--root-certificates", str(self.tls[0])]
        self.nodes[k] = self._start(f"supernode{k}", command)
        return self.nodes[k]

    def __enter__(self) -> Loopback:
        (self.home / "flwr").mkdir(parents=True, exist_ok=True)
        command = [str(BIN / "flower-superlink"), *self._security(),
                   "--disable-runtime-dependency-installation", "--host", "127.0.0.1",
                   "--port", str(self.port), "--database", str(self.home / "state.db")]
        if self.tls is not None:
            ca, cert, key = self.tls
            command += ["--ssl-ca-certfile", str(ca), "--ssl-certfile", str(cert),
                        "--ssl-keyfile", str(key)]
        try:
            self.link = self._start("superlink", command)
            wait_for_port(self.port)
            for k in range(len(self.sites)):
                self.start_node(k)
            profile = f'address = "127.0.0.1:{self.port}"\n'
            profile += ("insecure = true\n" if self.tls is None
                        else f'root-certificates = "{self.tls[0]}"\n')
            (self.home / "flwr" / "config.toml").write_text(
                f'[superlink]\ndefault = "loopback"\n\n[superlink.loopback]\n{profile}')
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def stop(process: subprocess.Popen | None) -> None:
        """SIGTERM to the process's group, then SIGKILL if it lingers."""
        if process is None or process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def close(self) -> None:
        """SuperNodes first, then the SuperLink, each by process group; then any group a
        descendant made for itself (the SuperLink's SuperExec starts a session of its own)."""
        self.groups |= descendant_groups([p.pid for p in self._started()])
        for process in self.nodes.values():
            self.stop(process)
        self.stop(self.link)
        for group in sorted(self.groups):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if not members(group):
                    break
                try:
                    os.killpg(group, sig)
                except ProcessLookupError:
                    break
                deadline = time.monotonic() + 10
                while members(group) and time.monotonic() < deadline:
                    time.sleep(0.2)

    def _started(self) -> list[subprocess.Popen]:
        return [p for p in [*self.nodes.values(), self.link] if p is not None]

    def alive(self) -> list[int]:
        """PIDs still running in any process group this network started."""
        groups = self.groups | {p.pid for p in self._started()}
        return sorted(pid for group in groups for pid in members(group))

    # ------------------------------------------------------------------ the CLI
    def flwr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "flwr"), *args], capture_output=True, text=True,
                              env=self.env, cwd=self.home, timeout=timeout)

    def submit(self, config: dict[str, Any], app: Path = APP) -> int:
        """Start a run (``flwr run`` without ``--stream``) and return its id."""
        overrides = " ".join(f"{k}={config_value(v)}" for k, v in config.items())
        done = self.flwr("run", str(app), "loopback", "--run-config", overrides)
        found = re.search(r"Successfully started run (\d+)", done.stdout + done.stderr)
        if not found:
            raise RuntimeError(f"flwr run did not start a run:\n{done.stdout}\n{done.stderr}")
        return int(found.group(1))

    def runs(self) -> list[dict[str, Any]]:
        done = self.flwr("list", "loopback", "--format", "json")
        return json.loads(done.stdout)["runs"]

    def status(self, run_id: int) -> dict[str, Any]:
        """The run's entry of ``flwr list --format json`` (``status``, ``status-details``...)."""
        return next(r for r in self.runs() if int(r["run-id"]) == run_id)

    def wait(self, run_id: int, out_dir: Path | None = None, timeout: float = 300) -> dict:
        """Poll ``flwr list`` until the run has finished; its entry. Each ``flwr list`` is a
        Python process of its own, so it is asked every few seconds only, and every second once
        the run's ``out_dir`` holds its ``history.json`` (written just before it finishes)."""
        deadline = time.monotonic() + timeout
        asked = 0.0
        while time.monotonic() < deadline:
            self.groups |= descendant_groups([p.pid for p in self._started()])
            written = out_dir is not None and (Path(out_dir) / "history.json").is_file()
            if time.monotonic() - asked >= (1.0 if written else 6.0):
                asked = time.monotonic()
                entry = self.status(run_id)
                if str(entry["status"]).startswith("finished"):
                    return entry
            time.sleep(0.25)
        raise TimeoutError(f"run {run_id} has not finished after {timeout} s")

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.home.glob("*.log")))


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1/localhost, made now with the
    ``cryptography`` package: ``(ca.crt, server.pem, server.key)``."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("fedlib test CA"))
          .issuer_name(name("fedlib test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(start)
          .not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                       x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end).add_extension(san, critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.crt", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    return paths
