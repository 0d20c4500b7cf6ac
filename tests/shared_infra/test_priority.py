"""A service lowers its own CPU priority when told to (``PMO_<SERVICE>_NICE``): for every
thread it has, those a library started while it was imported among them, and every thread it
starts afterwards; it never raises a priority, and unset leaves the one it was started with.
Each case runs in a process of its own, since a process cannot take back a priority it gave up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent(
    """
    import json, os, sys, threading
    from shared.runtime import lower_priority

    def nice_of(thread_id):
        return os.getpriority(os.PRIO_PROCESS, thread_id)

    asked = [None if a == "unset" else int(a) for a in sys.argv[1:]]
    release, started, ids = threading.Event(), threading.Event(), []

    def early():  # running before the priority is lowered, as a maths library's threads are
        ids.append(threading.get_native_id())
        started.set()
        release.wait()

    threading.Thread(target=early).start()
    started.wait()
    results = [lower_priority(asked[0])]
    late = []
    thread = threading.Thread(target=lambda: late.append(nice_of(threading.get_native_id())))
    thread.start()
    thread.join()
    results += [nice_of(ids[0]), late[0]]
    results += [lower_priority(a) for a in asked[1:]]
    results.append(nice_of(0))
    release.set()
    print(json.dumps(results))
    """
)


def probe(*asked: int | None, started_at: int = 0) -> list[int]:
    """[what ``lower_priority(asked[0])`` returned, the nice of a thread started before it and
    of one started after it, what each later ``lower_priority`` returned, the main thread's
    nice at the end]."""
    out = subprocess.run(
        [
            "nice",
            "-n",
            str(started_at),
            sys.executable,
            "-c",
            PROBE,
            *("unset" if a is None else str(a) for a in asked),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    result: list[int] = json.loads(out)
    return result


pytestmark = pytest.mark.skipif(
    os.getpriority(os.PRIO_PROCESS, 0) > 0, reason="the suite itself runs niced"
)


def test_every_thread_is_lowered_those_running_already_and_those_started_after() -> None:
    # At 7 every thread runs at 7; asked for 3 later, or for nothing, it stays at 7.
    assert probe(7, 3, None) == [7, 7, 7, 7, 7, 7]


def test_unset_leaves_the_priority_it_was_started_with() -> None:
    assert probe(None) == [0, 0, 0, 0]
    assert probe(None, started_at=5) == [5, 5, 5, 5]


def test_a_priority_is_never_raised() -> None:
    # Started at 5 and asked for 3: it stays at 5 (raising it would take a privilege).
    assert probe(3, started_at=5) == [5, 5, 5, 5]
    assert probe(0, started_at=5) == [5, 5, 5, 5]


@pytest.mark.skipif(os.geteuid() != 0, reason="starting at a negative nice takes a privilege")
def test_unset_keeps_a_priority_above_the_default() -> None:
    # A process started at -5 (say by systemd's Nice=) and not told a value stays at -5.
    assert probe(None, started_at=-5) == [-5, -5, -5, -5]
