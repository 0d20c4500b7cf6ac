"""Where the CPU goes during a benchmark row: seconds of CPU per process group, read from
/proc, and how busy the whole machine was. With two cores shared by the broker, Postgres, the
four services and the load generator, the pipeline's ceiling is the cores divided by the CPU
one submission costs in all of them together; these figures show that ceiling and who spends
it (docs/performance.md)."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")
_PROC = Path("/proc")


def process_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (0 when it has gone)."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # The command name (field 2) may hold spaces; the fields after it are fixed.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def waited_seconds(pid: int) -> float:
    """Seconds the threads of ``pid`` have spent runnable but waiting for a core so far (the
    second field of each thread's ``schedstat``; 0 when the process has gone). A thread that
    ended took its share with it."""
    waited = 0
    try:
        tasks = list((_PROC / str(pid) / "task").iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    for task in tasks:
        try:
            waited += int((task / "schedstat").read_text().split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return waited / 1e9


def _cmdline(pid: str) -> str:
    try:
        return (_PROC / pid / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _comm(pid: str) -> str:
    try:
        return (_PROC / pid / "comm").read_text().strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def pids_where(test: Callable[[str, str], bool]) -> list[int]:
    """Processes whose (command name, command line) pass ``test``."""
    return [
        int(p.name)
        for p in _PROC.iterdir()
        if p.name.isdigit() and test(_comm(p.name), _cmdline(p.name))
    ]


_CLIENT = re.compile(r"\d+\.\d+\.\d+\.\d+\(\d+\)|\[local\]|::1\(\d+\)")


def postgres_pids(database: str | None = None) -> list[int]:
    """The server's processes: with ``database``, its background processes and only the
    backends connected to that database (other clients of a shared server are left out)."""

    def wanted(comm: str, cmd: str) -> bool:
        if comm != "postgres":
            return False
        return database is None or not _CLIENT.search(cmd) or f" {database} " in cmd

    return pids_where(wanted)


def broker_pids(bootstrap: str) -> list[int]:
    return pids_where(lambda _, cmd: "tansu" in cmd and f"tcp://{bootstrap}" in cmd)


def machine_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of all cores since boot, from /proc/stat."""
    first = (_PROC / "stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(v) for v in first[:8]]  # user nice system idle iowait irq softirq steal
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / _TICK, sum(ticks) / _TICK


@dataclass(frozen=True, slots=True)
class CpuUse:
    seconds: dict[str, float]  # CPU seconds per group over the interval
    # Seconds the group's threads spent runnable but waiting for a core over the interval: on
    # a full machine, the time its work was queued behind other processes'.
    waited: dict[str, float]
    machine_busy: float  # busy share of all cores over the interval, 0..1
    cores: int
    elapsed_cores_seconds: float  # wall time x cores

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def wait_per_cpu_second(self, group: str) -> float:
        """Seconds ``group`` waited for a core for each second it ran."""
        ran = self.seconds.get(group, 0.0)
        return self.waited.get(group, 0.0) / ran if ran else 0.0


class CpuMeter:
    """CPU per group between ``start()`` and ``stop()``. Groups are found again at the stop, so
    processes that start during the interval (Postgres backends) are counted from zero."""

    def __init__(self, groups: Mapping[str, Callable[[], list[int]]]) -> None:
        self._groups = groups
        self._before: dict[int, float] = {}
        self._waited_before: dict[int, float] = {}
        self._machine: tuple[float, float] = (0.0, 0.0)

    def start(self) -> None:
        pids = self._all()
        self._before = {pid: process_seconds(pid) for pid in pids}
        self._waited_before = {pid: waited_seconds(pid) for pid in pids}
        self._machine = machine_seconds()

    def stop(self) -> CpuUse:
        busy, total = machine_seconds()
        found = {name: find() for name, find in self._groups.items()}
        seconds = {
            name: sum(process_seconds(p) - self._before.get(p, 0.0) for p in pids)
            for name, pids in found.items()
        }
        waited = {
            name: sum(waited_seconds(p) - self._waited_before.get(p, 0.0) for p in pids)
            for name, pids in found.items()
        }
        machine_busy, machine_total = busy - self._machine[0], total - self._machine[1]
        cores = os.cpu_count() or 1
        return CpuUse(
            seconds=seconds,
            waited=waited,
            machine_busy=machine_busy / machine_total if machine_total else 0.0,
            cores=cores,
            elapsed_cores_seconds=machine_total,
        )

    def _all(self) -> set[int]:
        return {pid for find in self._groups.values() for pid in find()}


async def quarter_rates(pids: Callable[[], list[int]], seconds: float) -> tuple[float, ...]:
    """The CPU of ``pids`` in each quarter of the next ``seconds``, in ms a second: whether a
    process's cost grows as a row goes on (the local broker's does, with the batches it
    stores: docs/performance.md)."""
    marks = [sum(process_seconds(pid) for pid in pids())]
    for _ in range(4):
        await asyncio.sleep(seconds / 4)
        marks.append(sum(process_seconds(pid) for pid in pids()))
    return tuple((b - a) * 1000 / (seconds / 4) for a, b in itertools.pairwise(marks))
