"""The agent's End-of-RIB (agent/eor.py) and the ExaBGP text it reads and writes for it (wire/exabgp_text.py)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dyncast_bgp.agent.eor import EndOfRibBook
from dyncast_bgp.model import IPAddress
from dyncast_bgp.wire.exabgp_json import FAMILIES as ALL_FAMILIES
from dyncast_bgp.wire.exabgp_json import Family
from dyncast_bgp.wire.exabgp_text import EndOfRib, NeighborChange, Reply, parse_neighbor_change, parse_reply

addresses = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6))


@given(addresses, st.sampled_from(["up", "connected"]))
def test_a_neighbor_change_line_is_read_back(address: IPAddress, state: str) -> None:
    assert parse_neighbor_change(f"neighbor {address} {state}\n") == NeighborChange(address, state)  # type: ignore[arg-type]


@given(addresses, st.text(alphabet=st.characters(exclude_characters="\n"),
                          max_size=40))
def test_a_down_line_is_read_whatever_its_reason(address: IPAddress, reason: str) -> None:
    assert parse_neighbor_change(f"neighbor {address} down - {reason}") == NeighborChange(address, "down")


@given(st.text(max_size=80))
def test_any_other_line_is_none_and_never_raises(line: str) -> None:
    change = parse_neighbor_change(line)
    if change is not None:
        words = line.split()
        assert words[0] == "neighbor" and ipaddress.ip_address(words[1]) == change.neighbor


@pytest.mark.parametrize("line", [
    "done", "error", "shutdown 12 1", "neighbor 192.0.2.1 receive update start",
    "neighbor 192.0.2.1 up now", "neighbor 192.0.2.999 up", "neighbor up", "neighbour 192.0.2.1 up",
])
def test_lines_that_are_not_a_session_change(line: str) -> None:
    assert parse_neighbor_change(line) is None


def test_end_of_rib_renders_exabgp_s_command_and_refuses_other_families() -> None:
    assert EndOfRib(ipaddress.ip_address("192.0.2.1"), "ipv6 unicast").render() == \
        "neighbor 192.0.2.1 announce eor ipv6 unicast"
    with pytest.raises(ValueError, match="unknown family 'ipv4 flow'"):
        EndOfRib(ipaddress.ip_address("192.0.2.1"), "ipv4 flow")  # type: ignore[arg-type]  # checked at run time
    assert parse_reply("neighbor 192.0.2.1 up") is Reply.OTHER


NEIGHBORS = [ipaddress.ip_address(text) for text in ("192.0.2.1", "192.0.2.2", "2001:db8::1")]
FAMILIES: dict[IPAddress, tuple[Family, ...]] = {
    NEIGHBORS[0]: ("ipv4 unicast",), NEIGHBORS[1]: ("ipv4 unicast", "ipv6 unicast"), NEIGHBORS[2]: ("ipv6 unicast",)}
UNKNOWN = ipaddress.ip_address("198.51.100.1")  # not configured: ExaBGP never reports it, the book ignores it
events = st.lists(st.tuples(st.sampled_from(["up", "down", "due", "settled"]), st.sampled_from([*NEIGHBORS, UNKNOWN]),
                            st.floats(0.0, 5.0)), max_size=40)


@settings(max_examples=300)
@given(events, st.floats(0.1, 10.0), st.sets(st.sampled_from(ALL_FAMILIES)), st.booleans())
def test_markers_go_once_per_session_up_when_settled_or_the_wait_is_over(script: list[tuple[str, IPAddress, float]],
                                                                         wait: float, announced: set[Family],
                                                                         started: bool) -> None:
    """Against a model: a neighbour is owed its markers from the start and from each ``up`` until they are sent
    or it goes down; they are sent exactly when asked while owed and settled or after ``wait``, one per family
    of the neighbour's that the agent announces."""
    book = EndOfRibBook(wait, FAMILIES)
    now = 0.0
    owed: dict[IPAddress, float] = {}
    if started:
        book.start(now)
        owed = dict.fromkeys(FAMILIES, now)
    for kind, neighbor, step in script:
        now += step
        if kind == "up":
            book.up(neighbor, now)
            if neighbor in FAMILIES:
                owed[neighbor] = now
        elif kind == "down":
            book.down(neighbor)
            owed.pop(neighbor, None)
        else:
            settled = kind == "settled"
            expected = {n for n, since in owed.items() if settled or now >= since + wait}
            sent = book.due(now, settled=settled, announced=announced)
            assert {s.neighbor for s in sent} == expected
            for s in sent:
                assert [m.family for m in s.markers] == [f for f in FAMILIES[s.neighbor] if f in announced]
                assert all(m.neighbor == s.neighbor for m in s.markers)
                assert s.waited == pytest.approx(now - owed.pop(s.neighbor))
                assert s.settled is settled
        assert book.owed == bool(owed)
        assert book.next_due() == (min(owed.values()) + wait if owed else None)


def test_a_book_needs_a_wait() -> None:
    with pytest.raises(ValueError, match="end_of_rib_wait must be > 0"):
        EndOfRibBook(0.0, FAMILIES)
