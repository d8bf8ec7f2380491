"""Properties of the control protocol: whatever arrives, the parser answers and only valid requests act."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from dyncast_bgp.agent import control
from dyncast_bgp.agent.state import AgentState
from dyncast_bgp.config.loader import parse
from dyncast_bgp.ctl.protocol import MAX_STRING, LineFramer, Overlong, Request, RequestError, encode, parse_request

VERBS = control.VERBS
CONFIG = parse("""
bgp: {router_id: 192.0.2.1, local_as: 65001, add_path: true}
services:
  - name: web
    dsid: 203.0.113.10
    instances:
      - {name: a, binding: 198.51.100.11}
      - {name: b, binding: 198.51.100.12, state: canary}
  - name: dns
    dsid: 203.0.113.53
    instances:
      - {name: a, binding: 198.51.100.21}
""")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20)
names = st.sampled_from(["web/a", "web/b", "dns/a", "a", "b", "zz", "web/zz", "dns/b"])
valid_requests = st.one_of(
    st.builds(Request, st.sampled_from(["instances", "status"])),
    st.builds(lambda verb, name: Request(verb, {"instance": name}), st.sampled_from(list(control._ACTS_ON)), names),
    st.builds(lambda verb, name, service: Request(verb, {"instance": name, "service": service}),
              st.sampled_from(list(control._ACTS_ON)), st.sampled_from(["a", "b", "zz"]),
              st.sampled_from(["web", "dns", "x"])),
)
# objects shaped like requests, with wrong or extra parts mixed in
near_requests = st.dictionaries(
    st.sampled_from(["verb", "instance", "service", "force", "Verb", ""]),
    st.sampled_from(["drain", "undrain", "withdraw", "restore", "status", "instances", "web/a", "a", "", "x" * 300])
    | json_values, max_size=4)


def admin_states(state: AgentState) -> dict[str, str]:
    return {str(iid): str(state.status(iid).admin) for iid, _ in state.instances()}


def well_formed(data: object) -> bool:
    """Independent statement of what the parser must accept."""
    if not isinstance(data, dict) or not isinstance(data.get("verb"), str) or data["verb"] not in VERBS:
        return False
    fields = VERBS[data["verb"]].fields
    if set(data) - set(fields) - {"verb"}:
        return False
    for name, spec in fields.items():
        if name not in data:
            if spec.required:
                return False
            continue
        value = data[name]
        if not isinstance(value, str) or not 0 < len(value) <= MAX_STRING:
            return False
    return True


@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise(line: bytes) -> None:
    result = parse_request(line, VERBS)
    assert isinstance(result, Request | RequestError)
    if isinstance(result, RequestError):
        assert result.message.startswith("request") and result.response() == {"ok": False,
                                                                               "error": result.message}
        assert encode(result.response()).count(b"\n") == 1


@given(st.one_of(json_values, near_requests))
def test_arbitrary_json_is_accepted_exactly_when_well_formed(data: Any) -> None:
    result = parse_request(json.dumps(data).encode(), VERBS)
    assert isinstance(result, Request) == well_formed(data), result
    if isinstance(result, Request):
        assert {"verb": result.verb, **result.args} == data


@given(valid_requests)
def test_valid_requests_round_trip(request: Request) -> None:
    line = request.to_json().encode()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert parse_request(line[:-1], VERBS) == request


@settings(max_examples=200)
@given(st.lists(st.one_of(valid_requests.map(lambda r: r.to_json().encode()[:-1]), st.binary(max_size=60),
                          near_requests.map(lambda d: json.dumps(d).encode())), max_size=12))
def test_only_valid_requests_change_state(lines: list[bytes]) -> None:
    state = AgentState(CONFIG)
    for line in lines:
        before = admin_states(state)
        request = parse_request(line, VERBS)
        if isinstance(request, RequestError):
            assert admin_states(state) == before
            continue
        applied = control.apply(state, request)
        answer = control.answer(state, request, applied, 0.0, {})
        json.dumps(answer, allow_nan=False)  # every answer is plain JSON
        if applied.transition is None or not applied.transition.changed:
            assert admin_states(state) == before
        else:
            changed = {name for name in before if before[name] != admin_states(state)[name]}
            assert changed == {str(applied.transition.iid)}
            assert answer["ok"] and answer["to"] == admin_states(state)[str(applied.transition.iid)]


@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=300), max_size=8),
       st.integers(min_value=1, max_value=40))
def test_framing_does_not_depend_on_chunking(stream: bytes, cuts: list[int], limit: int) -> None:
    whole = LineFramer(limit)
    expected = whole.feed(stream) + whole.finish()
    framer = LineFramer(limit)
    got: list[bytes | Overlong] = []
    start = 0
    for cut in sorted(cut % (len(stream) + 1) for cut in cuts):
        got += framer.feed(stream[start:cut])
        start = cut
    got += framer.feed(stream[start:]) + framer.finish()
    assert got == expected
    # against an independent statement: split at newlines, skip blank lines, over-long lines become Overlong
    model: list[bytes | Overlong] = []
    for raw in stream.split(b"\n"):
        if len(raw) > limit:
            model.append(Overlong(len(raw)))
        elif raw.rstrip(b"\r").strip():
            model.append(raw.rstrip(b"\r"))
    assert got == model


def test_pathological_json_is_an_error_not_an_exception() -> None:
    for line in (b"[" * 60_000, b'{"verb": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", b"1" * 5_000,
                 b'{"verb": "status", "verb": "status"}', b"\x00", b'"\xed\xa0\x80"', b"NaN"):
        result = parse_request(line, VERBS)
        assert isinstance(result, RequestError), line[:40]
    assert "given twice" in parse_request(b'{"verb": "status", "verb": "status"}', VERBS).message  # type: ignore[union-attr]
