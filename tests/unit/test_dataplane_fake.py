"""A fake kernel for the Linux dataplane backend: records commands, answers listings, fails on misuse.

:class:`FakeKernel` implements the backend's ``Runner`` protocol. It never
models the kernel; instead every command must pass the invariants the
backend promises (STYLE.md: fakes fail the test on misuse):

* only ``nft``, ``ip``, ``conntrack`` and ``sysctl`` are run;
* nft touches only ``table inet dyncast``: never ``flush ruleset``, never
  another table, element lists split into chunks;
* ``ip`` batches touch only our rule priorities, tables and tunnel names,
  and ``-force`` (continue after errors) only for batches that only remove
  (or where a test allows it);
* conntrack is never flushed: ``-D`` always names one mark of our range,
  ``-L`` always filters by our mark range;
* sysctl writes only ``net.ipv4.conf.all.src_valid_mark``.

Listings are answered from :attr:`FakeKernel.listings` (``nft`` table JSON,
rules, links, conntrack); writes succeed unless :attr:`FakeKernel.fail`
says otherwise. The tests at the end check that the invariants fire.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest

from dyncast_bgp.dataplane.layout import MAX_SLOT, Layout, is_tunnel_name
from dyncast_bgp.dataplane.runner import Completed

LAYOUT = Layout()
NO_TABLE = "Error: No such file or directory\nlist table inet dyncast\n"
_RULE = re.compile(r"^rule (add|del) priority (\d+) (.*)$")
_ROUTE = re.compile(r"^route (replace|flush|show|del) (\S+ )?.*table (\d+)")
_LINK = re.compile(r"^link (add|set|del) (\S+)")


class InvariantViolationError(AssertionError):
    """The backend ran a command it promised never to run."""


@dataclass
class FakeKernel:
    """A Runner that checks invariants and answers listings."""

    listings: dict[str, str] = field(default_factory=dict)
    fail: Callable[[Sequence[str], str | None], str | None] = lambda argv, text: None
    allow_force: bool = False
    calls: list[tuple[tuple[str, ...], str | None]] = field(default_factory=list)

    # -- the Runner protocol ---------------------------------------------------------------------------

    def run(self, argv: Sequence[str], *, input: str | None = None) -> Completed:
        argv = tuple(argv)
        self.calls.append((argv, input))
        {"nft": self._nft, "ip": self._ip, "conntrack": self._conntrack, "sysctl": self._sysctl}.get(
            argv[0], self._unknown)(argv, input)
        error = self.fail(argv, input)
        if error is not None:
            return Completed(argv, 1, "", error)
        stdout, stderr = self._answer(argv)
        return Completed(argv, 1 if stderr == NO_TABLE else 0, stdout, stderr)

    # -- what the tests look at -------------------------------------------------------------------------

    def writes(self) -> list[tuple[tuple[str, ...], str | None]]:
        """Commands that change something (listings filtered out)."""
        return [(argv, text) for argv, text in self.calls if not _is_listing(argv)]

    def nft_scripts(self) -> list[str]:
        return [text or "" for argv, text in self.calls if argv[:3] == ("nft", "-f", "-")]

    def batch_lines(self) -> list[str]:
        return [line for argv, text in self.calls if "-batch" in argv and not _is_listing(argv)
                for line in (text or "").splitlines()]

    def reset(self) -> None:
        self.calls.clear()

    # -- answers ----------------------------------------------------------------------------------------

    def _answer(self, argv: tuple[str, ...]) -> tuple[str, str]:
        if argv[:3] == ("nft", "-j", "list"):
            key = "nft table" if argv[3] == "table" else f"nft map {argv[-1]}"
            if key in self.listings:
                return self.listings[key], ""
            return ("", NO_TABLE) if argv[3] == "table" else ('{"nftables": []}', "")
        if argv[:2] == ("ip", "-4") and "rule" in argv:
            return self.listings.get("rules4", "[]"), ""
        if argv[:2] == ("ip", "-6") and "rule" in argv:
            return self.listings.get("rules6", "[]"), ""
        if "link" in argv:
            return self.listings.get("links", "[]"), ""
        if argv[:2] == ("conntrack", "-L"):
            return self.listings.get(f"conntrack {argv[3]}", ""), "conntrack v1.4.7: 0 flow entries have been shown.\n"
        if argv[:2] == ("conntrack", "-D"):
            return "", f"conntrack v1.4.7 (conntrack-tools): {self.listings.get('deleted', '0')} flow entries " \
                       "have been deleted.\n"
        if argv[0] == "sysctl" and "-e" in argv:
            return "".join(f"{name} = {self.listings.get(name, '0')}\n" for name in argv[2:]), ""
        if "route" in argv and "get" in argv:
            return self.listings.get("route get", "[]"), ""
        if "route" in argv and "all" in argv:
            return (self.listings.get("routes", "[]") if "-4" in argv else "[]"), ""
        return "", ""

    # -- invariants -------------------------------------------------------------------------------------

    def _unknown(self, argv: tuple[str, ...], text: str | None) -> None:
        raise InvariantViolationError(f"unexpected program: {argv}")

    def _nft(self, argv: tuple[str, ...], text: str | None) -> None:
        if argv[:3] == ("nft", "-j", "list"):
            if argv[3:6] != ("table", "inet", "dyncast") and not (argv[3:6] == ("map", "inet", "dyncast")
                                                                    and argv[6] in ("dc_aff4", "dc_aff6")):
                raise InvariantViolationError(f"nft lists something not ours: {argv}")
            return
        if argv != ("nft", "-f", "-") or text is None:
            raise InvariantViolationError(f"nft must read one transaction from stdin: {argv}")
        depth = 0
        for line in text.splitlines():
            stripped = line.strip()
            if depth == 0 and stripped:
                _check_nft_statement(stripped)
            depth += line.count("{") - line.count("}")

    def _ip(self, argv: tuple[str, ...], text: str | None) -> None:
        if _is_listing(argv):
            return
        removing = text is not None and all(re.match(r"^(rule del|route del|route flush|link del) ", line)
                                            for line in text.splitlines())
        if "-force" in argv and not (self.allow_force or removing):
            raise InvariantViolationError(f"ip -force for a batch that adds: {argv}")
        if "-batch" not in argv or text is None:
            raise InvariantViolationError(f"ip changes must be batched: {argv}")
        for line in text.splitlines():
            _check_ip_line(line)

    def _conntrack(self, argv: tuple[str, ...], text: str | None) -> None:
        if "-F" in argv or "--flush" in argv:
            raise InvariantViolationError("conntrack flushed")
        if argv[1] not in ("-L", "-D") or "--mark" not in argv:
            raise InvariantViolationError(f"conntrack without a mark filter: {argv}")
        value = argv[argv.index("--mark") + 1]
        if argv[1] == "-L":
            if value != f"{LAYOUT.mark_base:#x}/0xffff0000":
                raise InvariantViolationError(f"conntrack -L beyond our mark range: {value}")
        elif "/" in value or LAYOUT.slot_of_mark(int(value, 16)) is None:
            raise InvariantViolationError(f"conntrack -D of a mark that is not one instance of ours: {value}")

    def _sysctl(self, argv: tuple[str, ...], text: str | None) -> None:
        if "-w" in argv and argv[-1].split("=")[0] != "net.ipv4.conf.all.src_valid_mark":
            raise InvariantViolationError(f"sysctl write beyond src_valid_mark: {argv}")


def _is_listing(argv: Sequence[str]) -> bool:
    if argv[0] == "nft":
        return "-j" in argv
    if argv[0] == "conntrack":
        return argv[1] == "-L"
    if argv[0] == "sysctl":
        return "-w" not in argv
    return "-j" in argv  # ip -j ... (show, route get, -batch of route show)


def _check_nft_statement(line: str) -> None:
    if line.startswith("table inet dyncast {"):
        return
    match = re.match(r"^(add|delete|flush) (element|chain|rule|table|set|map) (\S+) (\S+)", line)
    if match is None or (match.group(3), match.group(4)) != ("inet", "dyncast"):
        raise InvariantViolationError(f"nft statement not confined to inet dyncast: {line!r}")
    if match.group(2) == "element" and line.count(",") + 1 > LAYOUT.nft_chunk:  # comments hold no commas
        raise InvariantViolationError(f"element statement over {LAYOUT.nft_chunk} elements: {line[:80]}...")


def _check_ip_line(line: str) -> None:
    if match := _RULE.match(line):
        priority, rest = int(match.group(2)), match.group(3)
        allowed = {LAYOUT.guard_priority, LAYOUT.rule_priority, LAYOUT.end_priority}
        if priority not in allowed:
            raise InvariantViolationError(f"rule at a priority not ours: {line}")
        tables = [int(t) for t in re.findall(r"lookup (\d+)", rest)]
        if any(LAYOUT.slot_of_table(t) is None for t in tables):
            raise InvariantViolationError(f"rule to a table not ours: {line}")
        return
    if match := _ROUTE.match(line):
        if LAYOUT.slot_of_table(int(match.group(3))) is None:
            raise InvariantViolationError(f"route in a table not ours: {line}")
        return
    if match := _LINK.match(line):
        if not is_tunnel_name(match.group(2)):
            raise InvariantViolationError(f"link not ours: {line}")
        return
    raise InvariantViolationError(f"unexpected ip batch line: {line!r}")


# -- the fake's own invariants fire --------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "text"), [
    (("nft", "-f", "-"), "flush ruleset\n"),
    (("nft", "-f", "-"), "delete table inet filter\n"),
    (("nft", "-f", "-"), "add element ip nat allow { 1.2.3.4 }\n"),
    (("nft", "list", "ruleset"), None),
    (("conntrack", "-F"), None),
    (("conntrack", "-D", "-f", "ipv4"), None),
    (("conntrack", "-D", "-f", "ipv4", "--mark", "0x10"), None),
    (("conntrack", "-L", "-f", "ipv4"), None),
    (("ip", "route", "add", "10.0.0.0/8", "via", "192.0.2.1"), None),
    (("ip", "-batch", "-"), "route replace 10.0.0.0/8 via 192.0.2.1 table main\n"),
    (("ip", "-batch", "-"), "route flush table 254\n"),
    (("ip", "-batch", "-"), "rule add priority 100 fwmark 0x1 lookup 100\n"),
    (("ip", "-batch", "-"), "link del eth0\n"),
    (("ip", "-force", "-batch", "-"), f"route replace 10.0.0.0/8 via 192.0.2.1 table {LAYOUT.table(1)}\n"),
    (("sysctl", "-w", "net.ipv4.ip_forward=0"), None),
    (("iptables", "-F"), None),
])
def test_fake_kernel_refuses_misuse(argv: tuple[str, ...], text: str | None) -> None:
    with pytest.raises(InvariantViolationError):
        FakeKernel().run(argv, input=text)


def test_fake_kernel_accepts_what_the_backend_may_do() -> None:
    kernel = FakeKernel()
    kernel.run(["nft", "-f", "-"], input="table inet dyncast {\n\tchain dc_pre {\n\t}\n}\n"
                                         "add element inet dyncast dc_instances { 0x44430000 }\n")
    kernel.run(["ip", "-batch", "-"], input=f"route replace 203.0.113.10/32 via 192.0.2.1 table {LAYOUT.table(1)}\n"
                                            f"rule add priority 10001 fwmark 0x44430001 lookup {LAYOUT.table(1)}\n"
                                            "link add dc0123456789 type gre local 1.1.1.1 remote 2.2.2.2 ttl 64\n")
    kernel.run(["conntrack", "-D", "-f", "ipv6", "--mark", f"{LAYOUT.mark(MAX_SLOT):#x}"])
    kernel.run(["sysctl", "-q", "-w", "net.ipv4.conf.all.src_valid_mark=1"])
    assert len(kernel.writes()) == 4
