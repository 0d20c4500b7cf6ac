"""A service lowers its own CPU priority when told to (``PMO_<SERVICE>_NICE``), for itself and
every thread it starts afterwards, and never raises it. Each case runs in a process of its own,
since a process cannot take back a priority it gave up."""

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

    first = lower_priority(int(sys.argv[1]))
    seen = []
    thread = threading.Thread(
        target=lambda: seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
    )
    thread.start()
    thread.join()
    again = lower_priority(int(sys.argv[2]))
    print(json.dumps([first, seen[0], again, os.getpriority(os.PRIO_PROCESS, 0)]))
    """
)


def probe(first: int, then: int) -> list[int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(first), str(then)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    result: list[int] = json.loads(out)
    return result


@pytest.mark.skipif(os.getpriority(os.PRIO_PROCESS, 0) > 0, reason="the suite itself runs niced")
def test_a_process_lowers_its_priority_for_the_threads_it_starts_and_never_raises_it() -> None:
    # At 7, a thread started afterwards runs at 7; asked for 3 later, it stays at 7.
    assert probe(7, 3) == [7, 7, 7, 7]


@pytest.mark.skipif(os.getpriority(os.PRIO_PROCESS, 0) > 0, reason="the suite itself runs niced")
def test_zero_leaves_the_priority_as_it_is() -> None:
    assert probe(0, 0) == [0, 0, 0, 0]
