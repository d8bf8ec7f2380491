"""Fuzz of the router's control requests: whatever arrives, the answer is one JSON line and nothing raises."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dyncast_bgp.config.schema import RouterConfig
from dyncast_bgp.ctl.protocol import Request, encode, handle_line
from dyncast_bgp.ctl.server import serve_control
from dyncast_bgp.dataplane.desired import DataplaneError
from dyncast_bgp.engine.owner import RouterEngine
from dyncast_bgp.model import InstanceKey
from dyncast_bgp.router import control
from dyncast_bgp.router.audit import DecisionBook
from dyncast_bgp.wire.exabgp_json import parse_line
from tests.unit.exabgp_lines import peer_up, update
from tests.unit.test_router_control import exchange_raw

SVC = "203.0.113.10/32"


def make_control(*, flows_fail: bool) -> control.RouterControl:
    engine = RouterEngine(RouterConfig())
    for line in (peer_up(1, "10.0.0.3"),
                 update(1, "10.0.0.3", SVC, "198.51.100.11", 1, metrics={"cpu_utilization": 20, "capacity": 10}),
                 update(1, "10.0.0.3", SVC, "198.51.100.12", 2, metrics={"cpu_utilization": 99})):
        engine.on_event(parse_line(line), 1.0)
    book = DecisionBook()
    book.record(engine.step(1.0), 1_700_000_000.0)

    async def flows() -> Mapping[InstanceKey, int]:
        if flows_fail:
            raise DataplaneError("no conntrack")
        return {}

    return control.RouterControl(engine, book, clock=lambda: 2.0, wall=lambda: 1_700_000_001.0,
                                 status=lambda: {"version": "x"}, flows=flows)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                           | st.text(max_size=300),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                      max_size=3), max_leaves=6)
services = st.sampled_from([SVC, "203.0.113.10", "203.0.113.11/32", "::1", "2001:db8::/32", "300.1.1.1", "", "x" * 300,
                            "203.0.113.10/33", "0.0.0.0/0"]) | st.text(max_size=40)
requests = st.fixed_dictionaries(
    {"verb": st.sampled_from([*control.VERBS, "drain", "", "SHOW"]) | json_values},
    optional={"service": services | json_values, "instance": json_values, "extra": json_values})
lines = requests.map(lambda data: json.dumps(data).encode()) | st.binary(max_size=200)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(line=lines, flows_fail=st.booleans())
def test_any_request_line_gets_one_answer_and_never_raises(line: bytes, flows_fail: bool) -> None:
    handler = make_control(flows_fail=flows_fail)
    request = handle_line(line, control.VERBS)
    answer = asyncio.run(handler.handle(request)) if isinstance(request, Request) else request.response()
    assert isinstance(answer.get("ok"), bool)
    if not answer["ok"]:
        assert isinstance(answer["error"], str) and answer["error"]
    text = encode(answer)
    assert text.endswith(b"\n") and text.count(b"\n") == 1


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(lines, min_size=1, max_size=40))
def test_a_stream_of_fuzzed_lines_over_the_socket_is_answered_in_order(batch: list[bytes]) -> None:
    batch = [line.replace(b"\n", b" ") for line in batch]
    expected = sum(1 for line in batch if line.strip())

    async def go() -> list[dict[str, Any]]:
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "r.sock"
            handler = make_control(flows_fail=False)
            server = await serve_control(path, mode=0o600, verbs=control.VERBS, handle=handler.handle)
            try:
                answers = await asyncio.to_thread(exchange_raw, path, b"".join(line + b"\n" for line in batch), 10.0)
                # still serving afterwards
                after = await asyncio.to_thread(exchange_raw, path, b'{"verb":"services"}\n', 10.0)
                assert after[0]["ok"]
            finally:
                await server.close()
            return answers

    answers = asyncio.run(go())
    assert len(answers) == expected
    assert all(isinstance(answer["ok"], bool) for answer in answers)


