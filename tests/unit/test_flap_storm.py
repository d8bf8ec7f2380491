"""Storm control: 1,000 updates/s through RouterRuntime; the dataplane is applied at most once per apply_interval."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Mapping

from dyncast_bgp.config.loader import parse
from dyncast_bgp.dataplane.desired import ApplyResult, DesiredState
from dyncast_bgp.model import InstanceKey
from dyncast_bgp.router.runtime import RouterRuntime
from tests.unit.exabgp_lines import update

INTERVAL = 0.1
CONFIG = f"""
bgp: {{router_id: 192.0.2.1, local_as: 65000}}
router:
  apply_interval: {INTERVAL}
  startup_hold: 0
  probes: {{enabled: false}}
  defaults: {{max_step: 1.0, min_dwell: 0, smoothing: 1.0}}
"""
SVC, A, B = "203.0.113.10/32", "198.51.100.11", "198.51.100.12"
RATE, SECONDS, BATCH = 1000, 2.5, 10


class TimedDataplane:
    """Records when each apply started; fails the test if two applies overlap."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.busy = False

    def apply(self, desired: DesiredState) -> ApplyResult:
        assert not self.busy, "two applies at once"
        self.busy = True
        self.starts.append(time.monotonic())
        time.sleep(0.002)
        self.busy = False
        return ApplyResult(changed=True, seconds=0.002)

    def flow_counts(self) -> Mapping[InstanceKey, int]:
        return {}

    def evict(self, keys: Iterable[InstanceKey]) -> int:
        return 0


async def storm(lines: list[str]) -> AsyncIterator[str]:
    """``RATE`` lines a second, in batches of ``BATCH`` (as a pipe delivers them), then end of input."""
    began = time.monotonic()
    for index in range(0, len(lines), BATCH):
        due = began + index / RATE
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        for line in lines[index:index + BATCH]:
            yield line
    await asyncio.sleep(0.3)  # let the last apply happen


def test_applies_stay_under_one_per_apply_interval_during_an_update_storm() -> None:
    count = int(RATE * SECONDS)
    lines = [update(1, "10.0.0.3", SVC, (A, B)[i % 2], 1 + i % 2,
                    metrics={"cpu_utilization": 10 + (i * 7) % 80, "capacity": 1000}) for i in range(count)]
    dataplane = TimedDataplane()

    async def go() -> RouterRuntime:
        runtime = RouterRuntime(parse(CONFIG), lines=storm(lines), dataplane=dataplane)
        await asyncio.wait_for(runtime.run(), timeout=30)
        return runtime

    began = time.monotonic()
    runtime = asyncio.run(go())
    elapsed = time.monotonic() - began
    assert runtime.counters.lines == count
    assert runtime.engine.decisions_changed > 10 * len(dataplane.starts) / 2  # decisions changed far more often
    gaps = [b - a for a, b in zip(dataplane.starts, dataplane.starts[1:], strict=False)]
    assert min(gaps) >= INTERVAL * 0.99, gaps
    assert len(dataplane.starts) <= elapsed / INTERVAL + 1
    assert len(dataplane.starts) >= SECONDS / INTERVAL / 3  # and it kept applying (coalesced, not starved)
