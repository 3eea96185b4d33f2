"""services/runtime/heap.py: a service process's start is frozen out of the collector's walks."""

from __future__ import annotations

import json
import subprocess
import sys

from services.runtime import heap

PROBE = """
import gc, json
import services.runtime.process  # what a service process has imported when it settles
from services.runtime import heap
before = gc.get_freeze_count()
heap.settle()
print(json.dumps({"before": before, "frozen": gc.get_freeze_count(),
                  "thresholds": gc.get_threshold(), "enabled": gc.isenabled()}))
"""


def test_settle_freezes_the_start_and_keeps_the_collector_on() -> None:
    # In a process of its own: freezing the test runner's heap would outlive the test.
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    state = json.loads(out.stdout)
    assert state["before"] == 0
    assert state["frozen"] > 10_000  # the imported stack: modules, classes, functions
    assert tuple(state["thresholds"]) == heap.THRESHOLDS
    assert state["enabled"] is True  # cycles are still collected
