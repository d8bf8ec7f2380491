"""Policies only see the past: views are plain values, checked for causality, and blind to recent changes."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from dyncast_bgp.sim.information import CausalityError, Feed, Report, View, build_view, check_causal
from dyncast_bgp.sim.policies import POLICIES, IngressContext, Live, Policy, PolicySpec
from dyncast_bgp.sim.scenario import Scenario
from dyncast_bgp.sim.world import simulate

FAIL_AT = 60.0


def world(*, failure: bool, propagation: float = 5.0) -> Scenario:
    rtts = {"a": 5, "b": 10, "c": 15}
    sites = [{"name": name, "servers": 4, "rate": 50} for name in rtts]
    if failure:
        sites[0]["failures"] = [{"start": FAIL_AT, "end": 90}]
    return Scenario.model_validate({
        "name": "info", "duration_s": 100, "warmup_s": 5, "seed": 3,
        "sessions": {"requests": 2, "think_s": 0.5},
        "information": {"propagation_s": propagation, "propagation_jitter_s": 0.0, "health_detect_s": 0.0,
                        "probe_detect_s": 2.0},
        "sites": sites,
        "ingresses": [{"name": "i", "count": 2, "rate": 300, "rtt_ms": rtts}],
    })


class Recorder:
    """Wraps a policy and records every split it chose, by decision time."""

    def __init__(self, inner: Policy, log: list[tuple[float, int, tuple[int, ...]]], ingress: int) -> None:
        self.inner, self.log, self.ingress = inner, log, ingress

    def update(self, view: View) -> None:
        self.inner.update(view)
        picks = tuple(self.inner.pick(u / 20) for u in range(20))
        self.log.append((view.now, self.ingress, picks))

    def pick(self, u: float) -> int:
        return self.inner.pick(u)


def recorded(name: str, scenario: Scenario) -> list[tuple[float, int, tuple[int, ...]]]:
    log: list[tuple[float, int, tuple[int, ...]]] = []
    inner = POLICIES[name]

    def build(context: IngressContext, live: Live | None) -> Policy:
        return Recorder(inner.build(context, live), log, context.index)

    simulate(scenario, PolicySpec(name, inner.summary, build, central=inner.central))
    return log


@pytest.mark.parametrize("name", ["least-loaded", "weighted", "anycast"])
def test_a_failure_is_invisible_to_ingress_policies_until_it_could_have_reached_them(name: str) -> None:
    """Same world, same seed, except that a site fails at 60 s: every decision before the news can have
    arrived (failure + propagation 5 s; probes after 2 s) is the same; an ingress that saw the failure
    any earlier would have been given future information."""
    calm, failing = recorded(name, world(failure=False)), recorded(name, world(failure=True))
    news = FAIL_AT + 2.0  # the probes notice first
    before = [entry for entry in calm if entry[0] < news]
    assert before == [entry for entry in failing if entry[0] < news]
    if name == "weighted":  # the control: it does react once the news is in (it always gives the site a share)
        assert [e for e in calm if e[0] < FAIL_AT + 10] != [e for e in failing if e[0] < FAIL_AT + 10]


def test_the_oracle_sees_the_failure_at_once() -> None:
    """The control for the test above: a central, exact policy reacts inside the window the others cannot."""
    calm, failing = recorded("oracle", world(failure=False)), recorded("oracle", world(failure=True))
    assert [e for e in calm if e[0] < FAIL_AT] == [e for e in failing if e[0] < FAIL_AT]
    assert [e for e in calm if e[0] < FAIL_AT + 1.5] != [e for e in failing if e[0] < FAIL_AT + 1.5]


def test_a_view_is_a_plain_value_with_no_handle_on_the_world() -> None:
    """A 'cheating' policy cannot reach the true state through its view: there is nothing to reach."""
    views: list[View] = []

    def keep(view: View) -> View:
        views.append(view)
        return view

    simulate(world(failure=False).with_changes(duration_s=10), "weighted", view_hook=keep)
    view = views[-1]
    seen: set[int] = set()

    def walk(value: Any) -> None:
        if id(value) in seen:
            return
        seen.add(id(value))
        assert isinstance(value, (View, tuple, str, int, float, bool, type(None))) or dataclasses.is_dataclass(
            value), f"a view holds a {type(value).__name__}"
        if dataclasses.is_dataclass(value):
            for item in dataclasses.fields(value):
                walk(getattr(value, item.name))
        elif isinstance(value, tuple):
            for item in value:
                walk(item)

    walk(view)
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.now = 0.0  # type: ignore[misc]
    assert not hasattr(view, "__dict__")  # slots: no attribute can be hung on it to smuggle state


def test_a_view_with_news_from_the_future_is_rejected() -> None:
    """A tampered view (what a policy given future information would get) stops the run."""

    def leak(view: View) -> View:
        fresh = dataclasses.replace(view.sites[0], measured_at=view.now)  # 'measured just now'
        return dataclasses.replace(view, sites=(fresh, *view.sites[1:]))

    with pytest.raises(CausalityError, match="measured at"):
        simulate(world(failure=False).with_changes(duration_s=10), "least-loaded", view_hook=leak)


def test_check_causal_accepts_what_build_view_builds_and_rejects_newer_reports() -> None:
    feed = Feed(1)
    for t in range(10):
        feed.publish(Report(0, float(t), float(t), utilisation=float(t)))
    kwargs: dict[str, Any] = {"names": ("a",), "capacities": (1.0,), "servers": (1,), "rtt_ms": (1.0,),
                              "reachable": (True,)}
    view = build_view(feed, ingress=0, now=9.0, delay_s=5.0, **kwargs)
    check_causal(view, 9.0)
    assert view.sites[0].utilisation == 4.0  # published at 4, arrived at 9
    with pytest.raises(CausalityError):
        check_causal(view, 8.0)  # a view built for a later time
    with pytest.raises(CausalityError):
        check_causal(dataclasses.replace(view, sites=(dataclasses.replace(view.sites[0], measured_at=8.5),)), 9.0)
