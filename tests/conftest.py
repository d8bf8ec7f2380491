"""Options shared by every test folder."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from hypothesis import settings

from tests.hoststall import HostStall

# Property tests check what is computed, not how fast: hypothesis' default 200 ms deadline per example is a timed
# assertion, and on a loaded 2-core CI machine it fails examples at random (a mutated ExaBGP line once did).
# Speed is measured by benchmarks/ instead.
settings.register_profile("dyncast", deadline=None)
settings.load_profile("dyncast")


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(HostStall(), "dyncast-host-stall")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite golden files from the renderers instead of comparing against them")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture(autouse=True)
def _unfreeze_collector() -> Iterator[None]:
    """The router freezes what is alive after each step (router/collector.py); a test that ran one must not
    leave the test process's objects frozen for the rest of the suite (cycles among them would never go)."""
    yield
    if gc.get_freeze_count():
        gc.unfreeze()
