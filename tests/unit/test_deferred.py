"""dyncast_bgp/deferred.py: what recomputes replaced, held and released later, bounded by a limit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dyncast_bgp.deferred import Deferred

Op = tuple[str, int]
OPS = st.lists(st.one_of(st.tuples(st.just("hold"), st.integers(0, 50)),
                         st.tuples(st.just("release"), st.integers(-5, 60)),
                         st.tuples(st.just("trim"), st.just(0)), st.tuples(st.just("clear"), st.just(0))),
               max_size=40)


class Token:
    """A held object whose release is seen: the test keeps no reference, only the numbers of those alive."""

    alive: set[int] = set()

    def __init__(self, number: int) -> None:
        self.number = number
        Token.alive.add(number)

    def __del__(self) -> None:
        Token.alive.discard(self.number)


@given(OPS, st.integers(0, 30))
def test_release_frees_what_it_counts_and_trim_keeps_at_most_the_limit(ops: list[Op], limit: int) -> None:
    Token.alive.clear()
    deferred = Deferred(limit=limit)
    made = released = 0
    for op, count in ops:
        before = len(deferred)
        if op == "hold":
            for _ in range(count):
                deferred.hold(Token(made))
                made += 1
            assert len(deferred) == before + count
            continue
        oldest = {token.number for token in deferred._held[:max(0, before - limit if op == "trim" else count)]
                  if isinstance(token, Token)}
        done = deferred.release(count) if op == "release" else deferred.trim() if op == "trim" else deferred.clear()
        wanted = {"release": max(0, min(count, before)), "trim": max(0, before - limit), "clear": before}[op]
        assert done == wanted and len(deferred) == before - done
        if op != "clear":
            assert not oldest & Token.alive  # the oldest go first
        released += done
        if op == "trim":
            assert len(deferred) <= limit
        if op == "clear":
            assert len(deferred) == 0
        assert len(Token.alive) == made - released == len(deferred)  # released means freed, now
    assert deferred.released == released


def test_a_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 0 objects, not -1"):
        Deferred(limit=-1)
