"""Drain state machine: for any sequence of drain/undrain/health/session/time events the
per-service constraints hold, and every run ends in a defined state."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import example, given, settings
from hypothesis import strategies as st

from dyncast_bgp.ops.drain import OUT, Accepted, DrainBook, Fact, Limits, Phase

SERVICES = ("web", "dns")
INSTANCES = tuple(f"{service}/{n}" for service in SERVICES for n in range(4))


@dataclass
class World:
    up: dict[str, bool]
    sessions: dict[str, float | None]
    read_at: dict[str, float]  # when each count was read

    def facts(self) -> dict[str, Fact]:
        return {key: Fact(key.split("/")[0], self.up[key], self.sessions[key], self.read_at[key])
                for key in INSTANCES}


limits = st.builds(Limits, min_available=st.integers(0, 3), max_drained=st.none() | st.integers(1, 3),
                   deadline=st.floats(1, 100), lead_time=st.sampled_from([0.0, 5.0, 30.0]),
                   threshold=st.sampled_from([0.0, 2.0]), settle=st.sampled_from([0.0, 3.0]))
instance = st.sampled_from(INSTANCES)
events = st.lists(st.one_of(
    st.tuples(st.just("drain"), instance, st.booleans(), st.none() | st.sampled_from([0.0, 10.0]),
              st.none() | st.sampled_from([5.0, 50.0])),
    st.tuples(st.just("undrain"), instance),
    st.tuples(st.just("health"), instance, st.booleans()),
    st.tuples(st.just("sessions"), instance, st.none() | st.sampled_from([0.0, 2.0]) | st.integers(0, 20).map(float)),
    st.tuples(st.just("time"), st.floats(0, 60)),
), max_size=60)


@settings(max_examples=300, deadline=None)
@given(web=limits, dns=limits, steps=events)
@example(web=Limits(settle=3.0), dns=Limits(), steps=[("sessions", "web/0", 0.0), ("drain", "web/0", False, None, None),
                                                      ("time", 2.0), ("sessions", "web/0", 0.0), ("time", 1.0)])
def test_constraints_hold_and_every_run_ends_in_a_defined_state(web: Limits, dns: Limits,
                                                                 steps: list[tuple[object, ...]]) -> None:
    book: DrainBook[str] = DrainBook({"web": web, "dns": dns})
    world = World(up=dict.fromkeys(INSTANCES, True), sessions=dict.fromkeys(INSTANCES, 5.0),
                  read_at=dict.fromkeys(INSTANCES, 0.0))
    now = 0.0
    for step in steps:
        kind = step[0]
        transitions = []
        if kind == "drain":
            _, key, hard, lead, deadline = step
            assert isinstance(key, str)
            before_out = len(book.out(world.facts(), key.split("/")[0]))
            result = book.request(key, world.facts(), now, hard=bool(hard), lead_time=lead,  # type: ignore[arg-type]
                                  deadline=deadline)  # type: ignore[arg-type]
            if isinstance(result, Accepted):
                transitions = list(result.transitions)
            else:  # refused only for a reason the limits give
                limit = book.limits_for(key.split("/")[0])
                assert (limit.max_drained is not None and before_out >= limit.max_drained) or \
                    book.available(world.facts(), key.split("/")[0], without=key) < limit.min_available
        elif kind == "undrain":
            book.undrain(str(step[1]), world.facts())
        elif kind == "health":
            world.up[str(step[1])] = bool(step[2])
        elif kind == "sessions":
            world.sessions[str(step[1])] = step[2]  # type: ignore[assignment]
            world.read_at[str(step[1])] = now
        else:
            now += float(step[1])  # type: ignore[arg-type]
        transitions += book.tick(world.facts(), now)
        due = book.next_due()
        assert due is None or due > now, f"a timer at {due} already due at {now}: the agent's loop would spin"
        for service in SERVICES:
            limit = book.limits_for(service)
            if limit.max_drained is not None:
                assert len(book.out(world.facts(), service)) <= limit.max_drained
        for change in transitions:
            if change.after is Phase.DRAINED and change.why == "sessions":  # on a count read after the settle time
                record = book.get(change.key)
                assert record is not None and record.started_at is not None
                assert world.read_at[change.key] >= record.started_at + book.limits_for(change.key.split("/")[0]).settle
            if change.after is Phase.DRAINING or (change.after is Phase.DRAINED and change.before is Phase.PENDING):
                service = change.key.split("/")[0]
                assert change.available >= book.limits_for(service).min_available
    # the end: every drain finishes (lead time and deadline pass) or waits, blocked with its reason
    book.tick(world.facts(), now + 10_000)  # lead times end: draining starts (its deadline counts from here)
    book.tick(world.facts(), now + 20_000)  # deadlines pass
    for key, record in book.records().items():
        assert record.phase in OUT
        assert record.phase is Phase.DRAINED or (record.phase is Phase.PENDING and record.blocked)
        if record.phase is Phase.DRAINED:
            assert record.why in ("hard", "sessions", "deadline") and record.finished_at is not None
        assert key in INSTANCES
    assert book.next_due() is None
