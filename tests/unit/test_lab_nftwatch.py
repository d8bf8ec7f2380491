"""The nft monitor parser of the convergence benchmark (dyncast_bgp.lab.nftwatch)."""

from __future__ import annotations

from dyncast_bgp.lab.nftwatch import MonitorParser, picks_of

CHAIN = "dc_s_203_0_113_10_32"
LISTING = f"""table inet dyncast {{ # handle 7
\tchain {CHAIN} {{ # handle 9
\t\tcounter packets 0 bytes 0 comment "dc service 203.0.113.10/32 flow 120000" # handle 10
\t\tmeta mark set numgen random mod 10000 comment "dc draw" # handle 11
\t\tmeta mark < 4000 meta mark set 0x00f00001 return comment "dc pick 0x00f00001 0-3999" # handle 12
\t\tcounter meta mark set 0x00f00002 ct mark set 0x00f00002 comment "dc pick 0x00f00002 4000-9999" # handle 13
\t}}
}}
""".splitlines()

CHANGE = [
    f"delete rule inet dyncast {CHAIN} handle 10",
    f"delete rule inet dyncast {CHAIN} handle 11",
    f"delete rule inet dyncast {CHAIN} handle 12",
    f"delete rule inet dyncast {CHAIN} handle 13",
    f'add rule inet dyncast {CHAIN} counter comment "dc service 203.0.113.10/32 flow 120000" # handle 14',
    f'add rule inet dyncast {CHAIN} counter packets 0 bytes 0 meta mark set 0x00f00002 ct mark set 0x00f00002 '
    f'comment "dc pick 0x00f00002 0-9999" # handle 15',
    "# new generation 31 by process 4242 (nft)",
]


def test_picks_of_reads_the_bucket_range() -> None:
    assert picks_of('... comment "dc pick 0x00f00003 100-149" # handle 3') == ("0x00f00003", 50)
    assert picks_of('counter comment "dc draw"') is None


def test_seed_then_a_transaction_gives_the_whole_chain_after_it() -> None:
    parser = MonitorParser()
    parser.seed(LISTING)
    assert parser.picks(CHAIN) == {"0x00f00001": 4000, "0x00f00002": 6000}
    commits = [parser.feed(line + "\n", 100.0 + index) for index, line in enumerate(CHANGE)]
    assert commits[:-1] == [None] * (len(CHANGE) - 1)
    last = commits[-1]
    assert last is not None
    assert (last.t, last.t_end, last.generation) == (100.0, 106.0, 31)
    assert last.chains == {CHAIN: {"0x00f00002": 10000}}


def test_other_tables_and_empty_generations_give_nothing() -> None:
    parser = MonitorParser()
    assert parser.feed('add rule inet other c comment "dc pick 0x1 0-9" # handle 2', 1.0) is None
    assert parser.feed("# new generation 5 by process 1 (nft)", 2.0) is None
    assert parser.feed("# new generation 6 by process 1 (nft)", 3.0) is None
    assert parser.rules == {}


def test_a_flushed_chain_has_no_picks() -> None:
    parser = MonitorParser()
    parser.seed(LISTING)
    assert parser.feed(f"flush chain inet dyncast {CHAIN}", 1.0) is None
    commit = parser.feed("# new generation 7 by process 1 (nft)", 1.5)
    assert commit is not None and commit.chains == {CHAIN: {}} and commit.t == 1.0
