"""Same scenario, same seed: the same run, bit for bit; every policy faces the same requests."""

from __future__ import annotations

from dyncast_bgp.sim.scenario import load
from dyncast_bgp.sim.stats import summarise
from dyncast_bgp.sim.world import simulate


def short(name: str = "many-ingress-herd", duration: float = 40.0, seed: int | None = None):  # type: ignore[no-untyped-def]
    return load(name).with_changes(duration_s=duration, seed=seed)


def test_same_seed_same_results() -> None:
    for policy in ("weighted", "least-loaded", "oracle", "round-robin"):
        first, second = simulate(short(), policy), simulate(short(), policy)
        assert first.responses == second.responses
        assert first.traffic == second.traffic and first.utilisation == second.utilisation
        assert summarise(first) == summarise(second)


def test_another_seed_another_run() -> None:
    assert simulate(short(seed=1), "weighted").responses != simulate(short(seed=2), "weighted").responses


def test_every_policy_faces_the_same_requests() -> None:
    """Common random numbers: arrivals and work do not depend on where the policy sends them."""
    counts = {simulate(short("skewed"), policy).requests for policy in ("anycast", "random", "weighted", "oracle")}
    assert len(counts) == 1
