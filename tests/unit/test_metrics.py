"""The Prometheus endpoints of the router and the agent, scraped over real HTTP and parsed."""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import SupportsIndex

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from dyncast_bgp.agent.runtime import AgentRuntime
from dyncast_bgp.config.loader import ConfigError, parse
from dyncast_bgp.dataplane.desired import ApplyResult, DesiredState
from dyncast_bgp.model import InstanceKey
from dyncast_bgp.obs import metrics
from dyncast_bgp.obs.metrics import Families, LoopCollector, MetricsListenError, rejection_reason, scalar, serve_metrics
from dyncast_bgp.router.runtime import RouterRuntime
from tests.unit.exabgp_lines import end_of_rib, peer_up, update

SVC, A, B = "203.0.113.10/32", "198.51.100.11", "198.51.100.12"
ROUTER = """
bgp: {router_id: 192.0.2.1, local_as: 65000}
router:
  apply_interval: 0.01
  startup_hold: 0
  metrics_interval: 0.05
  probes: {enabled: false}
  defaults: {max_step: 1.0, min_dwell: 0, smoothing: 1.0}
  static_paths: [{binding: 198.51.100.11, rtt_ms: 5, loss: 0.01}, {binding: 198.51.100.12, rtt_ms: 9}]
  metrics_listen: 127.0.0.1:0
"""


def scrape(port: int) -> dict[str, list[Sample]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples: dict[str, list[Sample]], name: str, **labels: str) -> float:
    matching = [s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matching) == 1, (name, labels, samples.get(name))
    return matching[0]


class Dataplane:
    def __init__(self) -> None:
        self.installed: DesiredState | None = None

    def apply(self, desired: DesiredState) -> ApplyResult:
        self.installed = desired
        return ApplyResult(changed=True, seconds=0.003)

    def flow_counts(self) -> Mapping[InstanceKey, int]:
        if self.installed is None:
            return {}
        return {t.key: 3 if str(t.key.binding) == A else 0 for s in self.installed.services for t in s.instances}

    def evict(self, keys: Iterable[InstanceKey]) -> int:
        return 0


def router_scrape(config: str) -> dict[str, list[Sample]]:
    """One scrape of a router running ``config`` that learned A, B and an implausible instance of SVC."""
    async def go() -> dict[str, list[Sample]]:
        queue: asyncio.Queue[str | None] = asyncio.Queue()

        async def lines() -> AsyncIterator[str]:
            while (line := await queue.get()) is not None:
                yield line

        runtime = RouterRuntime(parse(config), lines=lines(), dataplane=Dataplane())
        task = asyncio.create_task(runtime.run())
        try:
            for line in (peer_up(1, "10.0.0.3"), peer_up(1, "10.0.0.4"),
                         update(1, "10.0.0.3", SVC, A, 1, metrics={"cpu_utilization": 20, "capacity": 1000}),
                         update(1, "10.0.0.3", SVC, B, 2, metrics={"cpu_utilization": 60, "capacity": 1000}),
                         update(1, "10.0.0.3", SVC, "198.51.100.99", 3,
                                metrics={"capacity": 0, "active_sessions": 5}),  # implausible: held out
                         "{garbage", "[]", end_of_rib(1, "10.0.0.3"), end_of_rib(1, "10.0.0.4")):
                queue.put_nowait(line)
            async with asyncio.timeout(10):
                while runtime.metrics_endpoint is None or runtime.flow_sample is None \
                        or not runtime.flow_sample[1]:
                    await asyncio.sleep(0.01)
                port = runtime.metrics_endpoint.port
                return await asyncio.to_thread(scrape, port)
        finally:
            queue.put_nowait(None)
            await asyncio.wait_for(task, 10)

    return asyncio.run(go())


INSTANCE_SERIES = ("dyncast_router_instance_metric", "dyncast_router_instance_metrics_age_seconds",
                   "dyncast_router_instance_eligible", "dyncast_router_instance_score", "dyncast_router_weight")


def test_router_endpoint_shows_sessions_routes_metrics_weights_flows_and_latencies() -> None:
    samples = router_scrape(ROUTER)
    assert value(samples, "dyncast_router_bgp_sessions_up") == 2
    assert value(samples, "dyncast_router_bgp_session_up", peer="10.0.0.4") == 1
    assert value(samples, "dyncast_router_routes", service=SVC) == 3
    assert value(samples, "dyncast_router_instance_metric", service=SVC, instance=B, metric="cpu_utilization") == 60
    weights = {s.labels["instance"]: s.value for s in samples["dyncast_router_weight"]}
    assert pytest.approx(sum(weights.values())) == 1.0 and weights[A] > weights[B]
    assert value(samples, "dyncast_router_path_rtt_seconds", instance=A) == pytest.approx(0.005)
    assert value(samples, "dyncast_router_path_loss_ratio", instance=A) == pytest.approx(0.01)
    assert value(samples, "dyncast_router_path_reachable", instance=B) == 1
    assert value(samples, "dyncast_router_flows", service=SVC, instance=A) == 3
    assert value(samples, "dyncast_router_exabgp_lines_rejected_total", reason="invalid_json") == 1
    assert value(samples, "dyncast_router_exabgp_lines_rejected_total", reason="not_object") == 1
    assert value(samples, "dyncast_router_exabgp_lines_total") == 9
    assert value(samples, "dyncast_router_input_rejected_total", reason="metrics-implausible") == 1
    assert value(samples, "dyncast_router_weight", service=SVC, instance="198.51.100.99") == 0
    assert value(samples, "dyncast_router_decision_seconds_count") >= 1
    assert value(samples, "dyncast_router_recompute_seconds_count") >= 1
    assert value(samples, "dyncast_router_apply_seconds_count") >= 1
    assert value(samples, "dyncast_router_instance_eligible", service=SVC, instance=A) == 1
    assert value(samples, "dyncast_router_rib_synced") == 1
    assert all(samples.get(name) for name in INSTANCE_SERIES)
    assert value(samples, "dyncast_router_audit_skipped_total") == 0  # no audit log here


def test_router_per_instance_series_can_be_only_the_weights_or_none() -> None:
    """router.metrics_instances: the per-instance series shrink, the rest of the endpoint stays."""
    every = router_scrape(ROUTER)
    light = router_scrape(ROUTER + "  metrics_instances: weights\n")
    bare = router_scrape(ROUTER + "  metrics_instances: none\n")
    weights = {s.labels["instance"]: s.value for s in every["dyncast_router_weight"]}
    assert {s.labels["instance"]: s.value for s in light["dyncast_router_weight"]} == weights
    assert len(weights) == 3 and weights["198.51.100.99"] == 0  # the excluded instance too, at 0
    assert [name for name in INSTANCE_SERIES if light.get(name)] == ["dyncast_router_weight"]
    assert not [name for name in INSTANCE_SERIES if bare.get(name)]
    for samples in (light, bare):  # per service and per D-BID series do not depend on it
        assert value(samples, "dyncast_router_routes", service=SVC) == 3
        assert value(samples, "dyncast_router_path_rtt_seconds", instance=A) == pytest.approx(0.005)
        assert value(samples, "dyncast_router_path_reachable", instance=B) == 1
        assert value(samples, "dyncast_router_flows", service=SVC, instance=A) == 3
    async def declared(mode: str) -> list[str]:  # with no service yet, the families are there, empty
        runtime = RouterRuntime(parse(ROUTER + f"  metrics_instances: {mode}\n"), lines=lines(), dataplane=None)
        return [f.name for f in await runtime._metric_families() if f.name in INSTANCE_SERIES]

    async def lines() -> AsyncIterator[str]:
        return
        yield

    assert sorted(asyncio.run(declared("all"))) == sorted(INSTANCE_SERIES)
    assert asyncio.run(declared("weights")) == ["dyncast_router_weight"] and asyncio.run(declared("none")) == []
    with pytest.raises(ConfigError, match=r"router\.metrics_instances"):
        parse(ROUTER + "  metrics_instances: some\n")


AGENT = """
bgp: {router_id: 192.0.2.1, local_as: 65001, add_path: true}
agent: {publish: {min_interval: 0.05, refresh_interval: 1}, metrics_listen: "127.0.0.1:0"}
services:
  - name: web
    dsid: 203.0.113.10
    instances:
      - {name: a, binding: 198.51.100.11, static: {cpu_utilization: 40}}
      - {name: b, binding: 198.51.100.12, state: draining, static: {cpu_utilization: 10}}
"""


class Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    async def write(self, text: str) -> None:
        self.lines.extend(text.splitlines())


def test_agent_endpoint_shows_updates_instances_and_their_metrics() -> None:
    async def go() -> dict[str, list[Sample]]:
        writer = Writer()
        closed = asyncio.Event()

        async def replies() -> AsyncIterator[str]:
            await closed.wait()
            yield ""

        runtime = AgentRuntime(parse(AGENT), writer=writer, replies=replies())
        task = asyncio.create_task(runtime.run())
        try:
            async with asyncio.timeout(10):
                while runtime.metrics_endpoint is None or len(writer.lines) < 2:
                    await asyncio.sleep(0.01)
                return await asyncio.to_thread(scrape, runtime.metrics_endpoint.port)
        finally:
            runtime.stopping.set()
            closed.set()
            await asyncio.wait_for(task, 10)

    samples = asyncio.run(go())
    assert value(samples, "dyncast_agent_published_routes") == 2
    assert value(samples, "dyncast_agent_updates_sent_total") >= 2
    assert "dyncast_agent_updates_suppressed_total" in samples
    assert value(samples, "dyncast_agent_instance_metric", instance="a", metric="cpu_utilization") == 40
    assert value(samples, "dyncast_agent_instance_admin", instance="b", state="draining") == 1
    assert value(samples, "dyncast_agent_instance_published", instance="b") == 1
    assert value(samples, "dyncast_agent_acks_total", result="error") == 0


def test_a_busy_loop_gets_the_previous_scrape_and_a_failing_builder_does_not_break_the_endpoint() -> None:
    async def go() -> list[str]:
        calls = {"n": 0}

        def build() -> Families:
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("bug")
            return [scalar("dyncast_test_value", "test", calls["n"])]

        registry = CollectorRegistry()
        collector = LoopCollector(asyncio.get_running_loop(), build, timeout=0.2)
        registry.register(collector)
        endpoint = serve_metrics("127.0.0.1:0", registry)
        try:
            first = await asyncio.to_thread(scrape, endpoint.port)
            second = await asyncio.to_thread(scrape, endpoint.port)  # the builder raised: previous families
            blocked = threading.Event()

            def scrape_while_blocked() -> dict[str, list[Sample]]:
                blocked.wait()
                return scrape(endpoint.port)

            waiter = asyncio.create_task(asyncio.to_thread(scrape_while_blocked))
            await asyncio.sleep(0)
            blocked.set()
            threading.Event().wait(0.4)  # the loop is busy (blocked) past the collector's timeout
            third = await waiter
        finally:
            await asyncio.to_thread(endpoint.close)
        return [str(value(s, "dyncast_test_value")) for s in (first, second, third)] + [str(collector.late > 0)]

    assert asyncio.run(go()) == ["1.0", "1.0", "1.0", "True"]


class Recording(list[Sample]):
    """A family's samples that note their length after every deletion (in ``cuts``, which holds no reference)."""

    def __init__(self, samples: Iterable[Sample], cuts: list[int]) -> None:
        super().__init__(samples)
        self.cuts = cuts

    def __delitem__(self, index: SupportsIndex | slice) -> None:
        super().__delitem__(index)
        self.cuts.append(len(self))


def big_build(cuts: list[int]) -> Callable[[], Families]:
    def build() -> Families:
        family = GaugeMetricFamily("dyncast_test_big", "test", labels=["n"])
        family.samples = Recording((Sample("dyncast_test_big", {"n": str(n)}, n)
                                    for n in range(2 * metrics.REAP_CHUNK + 7)), cuts)
        return [family, scalar("dyncast_test_small", "test", 1)]
    return build


async def reaped(collector: LoopCollector) -> int:
    """Turns of the loop until the collector has freed what it replaced."""
    turns = 0
    while collector._reaping:
        await asyncio.sleep(0)
        turns += 1
    return turns


def test_replaced_families_are_freed_a_chunk_at_a_time_between_turns_of_the_loop() -> None:
    cuts: list[int] = []

    async def go() -> int:
        collector = LoopCollector(asyncio.get_running_loop(), big_build(cuts))
        collector.collect()
        collector.collect()  # the second build replaces the first: its samples are freed in chunks
        assert cuts == []  # none in the scrape itself
        return await reaped(collector)

    turns = asyncio.run(go())
    assert cuts == [metrics.REAP_CHUNK + 7, 7, 0] and turns >= 3


def test_families_a_scrape_still_renders_are_not_cut_and_are_dropped_whole_after_the_patience(
        monkeypatch: pytest.MonkeyPatch) -> None:
    cuts: list[int] = []

    async def go() -> list[int]:
        collector = LoopCollector(asyncio.get_running_loop(), big_build(cuts))
        rendering = collector.collect()  # what a scrape in the HTTP thread holds while it renders
        collector.collect()
        await asyncio.sleep(3 * metrics.REAP_WAIT)
        while_held = list(cuts)
        del rendering  # the scrape is done
        await reaped(collector)
        return while_held

    assert asyncio.run(go()) == [] and cuts == [metrics.REAP_CHUNK + 7, 7, 0]

    cuts.clear()
    monkeypatch.setattr(metrics, "REAP_PATIENCE", 2 * metrics.REAP_WAIT)

    async def held_on() -> Families:
        collector = LoopCollector(asyncio.get_running_loop(), big_build(cuts))
        rendering = list(collector.collect())
        collector.collect()
        await reaped(collector)  # gives up waiting: dropped, never cut
        return rendering

    assert len(asyncio.run(held_on())[0].samples) == 2 * metrics.REAP_CHUNK + 7 and cuts == []


def test_listen_addresses_are_checked_in_the_config_and_at_bind() -> None:
    with pytest.raises(ConfigError, match=r"router\.metrics_listen"):
        parse(ROUTER.replace("127.0.0.1:0", "localhost"))
    with pytest.raises(ConfigError, match="brackets"):
        parse(ROUTER.replace("127.0.0.1:0", '"::1:9100"'))
    assert parse(ROUTER.replace("127.0.0.1:0", '"[::1]:9100"')).router.metrics_listen == "[::1]:9100"
    with pytest.raises(MetricsListenError, match="cannot listen"):
        serve_metrics("192.0.2.77:0", CollectorRegistry())  # not an address of this host


def test_rejection_reasons_are_a_small_fixed_set() -> None:
    assert rejection_reason("invalid JSON (Expecting value)") == "invalid_json"
    assert rejection_reason("missing key 'neighbor'") == "missing_key"
    assert rejection_reason("something new") == "invalid"
