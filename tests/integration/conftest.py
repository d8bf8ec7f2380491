"""Fixtures for tests with real namespaces and BGP daemons (root only).

``interop``: one session-wide :class:`~dyncast_bgp.lab.interop.InteropLab`
with every installed receiver started and two speaker slots: slot 0 is the
scripted announcer (``announcer`` fixture), slot 1 is free for a speaker under
test (e.g. the agent: ``interop.exabgp_speaker(1, processes=[...])``, then
``interop.wait_established([1])``). Tests share the receivers, so each uses
its own D-SID prefixes.

Tests skip with the reason when not run as root or when a daemon's binaries
are missing. Everything is removed at the end of the session even when tests
fail. The work directory (configs, logs) is kept when a test failed, or always
with ``DYNCAST_LAB_KEEP=1``; failure messages name the log files.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Generator, Iterator

import pytest

from dyncast_bgp.lab.announcer import Announcer
from dyncast_bgp.lab.daemons import ExaBgp
from dyncast_bgp.lab.interop import RECEIVERS, InteropLab, missing_binaries
from dyncast_bgp.lab.netns import Lab, list_namespaces, sweep_stale

SPEAKER_SLOTS = 2
FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:  # keep the lab's configs and logs for the post-mortem
        item.config.stash[FAILED] = True
    return report


def netns_skip_reason() -> str | None:
    """Why namespace tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces (run as root, e.g. in CI)"
    if shutil.which("ip") is None:
        return "iproute2 'ip' is not installed"
    return None


def require_receiver(interop: InteropLab, receiver: str) -> None:
    if receiver not in interop.receiver_names:
        missing = missing_binaries([receiver]).get(receiver, [])
        pytest.skip(f"{receiver} receiver not available: missing {', '.join(missing) or 'binaries'}")


@pytest.fixture
def netns_ready() -> None:
    """Skip unless namespaces can be created here (for tests building their own Lab)."""
    reason = netns_skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def interop_receiver(request: pytest.FixtureRequest, interop: InteropLab) -> str:
    """The receiver named by ``@pytest.mark.parametrize("interop_receiver", ..., indirect=True)``; skips if absent."""
    name = str(request.param)
    require_receiver(interop, name)
    return name


@pytest.fixture(scope="session")
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    reason = netns_skip_reason()
    if reason:
        pytest.skip(reason)
    sweep_stale()  # namespaces of earlier runs that were killed before cleaning up
    with Lab(keep_workdir=os.environ.get("DYNCAST_LAB_KEEP") == "1") as created:
        yield created
        if request.config.stash.get(FAILED, False):
            created.keep_workdir = True
            print(f"\nlab work directory kept after a failure: {created.workdir}", file=sys.__stderr__)
    left = set(created.namespace_names) & set(list_namespaces())
    assert not left, f"namespaces left behind: {sorted(left)}"


@pytest.fixture(scope="session")
def interop(lab: Lab) -> InteropLab:
    missing = missing_binaries()
    if missing_binaries(["exabgp"]):
        pytest.skip("exabgp is not installed in this environment")
    available = [name for name in RECEIVERS if name not in missing]
    built = InteropLab(lab, speakers=SPEAKER_SLOTS, receivers=available)
    built.start_receivers()
    return built


@pytest.fixture(scope="session")
def announcer(lab: Lab, interop: InteropLab) -> Announcer:
    """The scripted announcer in speaker slot 0, every session to the receivers Established."""
    relay = Announcer(lab.directory("announcer"))
    speaker: ExaBgp = interop.exabgp_speaker(0, processes=[relay.process()], name="announcer-exabgp")
    speaker.start()
    interop.wait_established([0])
    return relay
