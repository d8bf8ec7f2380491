"""The Linux backend: the :class:`~dyncast_bgp.dataplane.desired.Dataplane` protocol over
nftables, policy routing and conntrack.

``apply(desired)``:

1. validate (pure, :func:`~dyncast_bgp.dataplane.plan.validate`), resolve the
   underlay device of SRv6 routes that name none, check that the devices of
   changed routes exist; any problem raises
   :class:`~dyncast_bgp.dataplane.desired.DataplaneInputError` before the
   kernel is touched;
2. on the first call, reconcile: read back what is installed, remove our own
   stale objects, adopt the rest (conntrack is never flushed);
3. build the desired kernel state and diff it against the installed one;
4. execute the plan: tunnels, routes and rules first (``ip -batch``), then one
   ``nft -f`` transaction, then client-affinity entries, rules, tables and
   tunnels of removed instances, then their conntrack entries. If the setup
   batch or the transaction fails, what the setup added is removed again and
   the next apply starts with a fresh read of the kernel.

A weight change is one ``nft -f`` call and nothing else.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from dyncast_bgp import gcpause
from dyncast_bgp.dataplane import conntrack
from dyncast_bgp.dataplane.desired import (
    ApplyResult,
    DataplaneError,
    DataplaneInputError,
    DesiredState,
    Encap,
    Forwarding,
)
from dyncast_bgp.dataplane.layout import Layout
from dyncast_bgp.dataplane.nft import TABLE, affinity_map, render_affinity_purge, render_cleanup, render_transaction
from dyncast_bgp.dataplane.plan import Builder, Plan, clean, diff, validate
from dyncast_bgp.dataplane.readback import (
    ReadbackError,
    RuleReadback,
    assemble,
    parse_nft,
    parse_rules,
    parse_tunnels,
)
from dyncast_bgp.dataplane.routes import (
    Batches,
    delete_line,
    guard_lines,
    installed_entry,
    render_setup,
    render_teardown,
    route_line,
    rule_line,
)
from dyncast_bgp.dataplane.runner import Completed, LocalRunner, Runner, checked
from dyncast_bgp.dataplane.state import KernelState, Meta
from dyncast_bgp.model import InstanceKey, IPAddress

log = structlog.get_logger(__name__)

SRC_VALID_MARK = "net.ipv4.conf.all.src_valid_mark"
LWT_HOOKS = "net.netfilter.nf_hooks_lwtunnel"
_PURGE_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class CleanupReport:
    table: bool = False
    rules: int = 0
    routes: int = 0
    tunnels: int = 0
    restored_sysctl: bool = False
    problems: tuple[str, ...] = ()

    def summary(self) -> str:
        parts = [f"table {'removed' if self.table else 'absent'}", f"{self.rules} rules", f"{self.routes} routes",
                 f"{self.tunnels} tunnels"]
        if self.restored_sysctl:
            parts.append(f"{SRC_VALID_MARK} restored")
        return ", ".join(parts)


@dataclass(slots=True)
class LinuxDataplane:
    """Programs this host's (or one namespace's) kernel; one instance per network namespace.

    ``manage_sysctls``: set ``net.ipv4.conf.all.src_valid_mark=1`` when the
    ruleset is first installed (the previous value is kept in the kernel and
    restored by :meth:`cleanup`), needed for reverse-path filtering of replies.
    """

    runner: Runner = field(default_factory=LocalRunner)
    layout: Layout = field(default_factory=Layout)
    manage_sysctls: bool = True
    clock: Callable[[], float] = time.perf_counter
    _installed: KernelState | None = None
    _builder: Builder | None = None
    _resolved: dict[Forwarding, Forwarding] = field(default_factory=dict)
    _lwt_hooks_on: bool = False
    _saved_sysctl: int | None = None

    def __post_init__(self) -> None:
        self._builder = Builder(self.layout)

    @property
    def installed(self) -> KernelState | None:
        """What this backend installed or adopted (None before the first apply/reconcile)."""
        return self._installed

    # -- the Dataplane protocol ---------------------------------------------------------------------

    def apply(self, desired: DesiredState) -> ApplyResult:
        """Install ``desired`` (see the module docstring); the garbage collector pauses meanwhile.

        An apply of thousands of services allocates hundreds of thousands of
        small objects, which would trigger full collections over the whole
        (large, long-lived) state; collection resumes when the apply returns.
        """
        with gcpause.paused():  # nests with the router's own pauses (another thread)
            return self._apply(desired)

    def _apply(self, desired: DesiredState) -> ApplyResult:
        started = self.clock()
        builder = self._require_builder()
        changes = builder.changes(desired)
        problems = validate(desired, self.layout, changes)
        if problems:
            raise DataplaneInputError("desired state refused: " + "; ".join(problems))
        installed = self._installed if self._installed is not None else self.reconcile()
        if not self._lwt_hooks_on and any(forwarding.mode is Encap.SRV6 for t in changes.targets
                                          for forwarding in t.columns.forwardings):
            self._check_lwt_hooks()
            self._lwt_hooks_on = True
        meta = self._first_meta() if not installed.table else None
        target = builder.build(desired, installed, meta, changes, self._resolve)
        plan = diff(installed, target, builder.touched, builder.reweighted)
        if plan.empty:
            builder.commit()
            return ApplyResult(False, self.clock() - started, "no change")
        self._check_devices(plan)
        try:
            self._execute(plan)
        except DataplaneError:
            self._installed = None  # re-read the kernel before the next apply
            builder.forget()
            raise
        self._installed = target
        builder.commit()
        seconds = self.clock() - started
        log.info("dataplane_applied", seconds=round(seconds, 4), summary=plan.summary())
        return ApplyResult(True, seconds, plan.summary(), plan.details())

    def flow_counts(self) -> Mapping[InstanceKey, int]:
        installed = self._installed if self._installed is not None else self.reconcile()
        counts = self._conntrack_counts()
        return {entry.key: counts.get(self.layout.mark(entry.slot), 0) for entry in installed.instances()}

    def evict(self, keys: Iterable[InstanceKey]) -> int:
        """Hard removal: delete these instances' client-affinity and conntrack entries (unknown keys refused).

        Set their weight to 0 first, or their clients re-pin to them again.
        """
        installed = self._installed if self._installed is not None else self.reconcile()
        slots = installed.slots()
        wanted = list(keys)
        unknown = [str(key) for key in wanted if key not in slots]
        if unknown:
            raise DataplaneInputError(f"unknown instance(s): {', '.join(unknown)}")
        marks = {self.layout.mark(slots[key]) for key in wanted}
        total = self._purge_affinity(marks)
        families = {key.service.version for key in wanted}
        total += sum(self._conntrack_delete(family, mark) for mark in sorted(marks) for family in sorted(families))
        log.info("dataplane_evicted", instances=[str(key) for key in wanted], entries=total)
        return total

    # -- lifecycle ------------------------------------------------------------------------------------

    def read(self) -> KernelState:
        """What the kernel holds under our names, without changing anything."""
        done = self.runner.run(["nft", "-j", "list", "table", *TABLE.split()])
        try:
            if done.ok:
                nft = parse_nft(done.stdout, self.layout)
            elif "No such file or directory" in done.stderr:
                nft = None
            else:
                raise DataplaneError(f"reading the ruleset failed: {done.describe()}")
            rules = {family: self._rules(family) for family in (4, 6)}
            links = checked(self.runner, ["ip", "-j", "-d", "link", "show"], what="listing links")
            return assemble(nft, rules, parse_tunnels(links.stdout), self.layout)
        except ReadbackError as exc:
            raise DataplaneError(str(exc)) from None

    def reconcile(self) -> KernelState:
        """Adopt what is installed: remove our stale objects, keep everything else (conntrack untouched)."""
        state = self.read()
        kept = clean(state)
        plan = diff(state, kept)
        if not plan.empty:
            self._execute(plan)
            log.info("dataplane_stale_removed", summary=plan.summary())
        if kept.table and self.manage_sysctls:
            self._sysctl_set(SRC_VALID_MARK, 1)
        self._installed = kept
        self._require_builder().forget()
        log.info("dataplane_reconciled", services=len(kept.services), instances=len(kept.slots()))
        return kept

    def cleanup(self) -> CleanupReport:
        """Remove every object of ours (table, rules, tables, tunnels) and nothing else; conntrack is left alone."""
        problems: list[str] = []
        try:
            state = self.read()
        except DataplaneError as exc:
            raise DataplaneError(f"cleanup refused: {exc}") from None
        rules = state.rules | state.stale.rules
        batches = Batches()
        for family, slot in sorted(rules):
            batches.family(family).append(rule_line("del", slot, self.layout))
        for family in sorted(state.guards):
            batches.family(family).extend(guard_lines("del", self.layout))
        for family, kind in sorted(state.stale.guards):
            line = guard_lines("del", self.layout)[0 if kind == "goto" else 1]
            batches.family(family).append(line)
        routes = self._our_routes()
        for family, line in routes:
            batches.family(family).append(line)
        batches.links += [f"link del {tunnel.name}" for tunnel in sorted(state.tunnels, key=lambda t: t.name)]
        if state.table:
            done = self.runner.run(["nft", "-f", "-"], input=render_cleanup())
            if not done.ok:
                problems.append(f"nft: {done.describe()}")
        problems += self._run_batches(batches, force=True)
        restored = False
        if state.table and self.manage_sysctls and state.meta.saved_src_valid_mark is not None:
            restored = self._sysctl_set(SRC_VALID_MARK, state.meta.saved_src_valid_mark)
        self._installed = None
        self._require_builder().forget()
        report = CleanupReport(state.table, len(rules) + 2 * len(state.guards) + len(state.stale.guards), len(routes),
                               len(state.tunnels), restored, tuple(problems))
        log.info("dataplane_cleaned_up", summary=report.summary(), problems=list(problems))
        return report

    # -- show ------------------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Installed state with live flow counts and routes, as plain data (``dyncast dataplane show``)."""
        state = self.read()
        counts = self._conntrack_counts()
        routes = self._routes(state)
        services = []
        for entry in sorted(state.services.values(), key=lambda e: e.service):
            instances = [{
                "key": str(i.key), "binding": str(i.key.binding), "path_id": i.key.path_id, "name": i.name,
                "slot": i.slot, "mark": f"{self.layout.mark(i.slot):#010x}", "table": self.layout.table(i.slot),
                "buckets": i.buckets, "share": i.buckets / self.layout.resolution,
                "route": routes.get(i.slot), "rule": (entry.service.version, i.slot) in state.rules,
                "flows": counts.get(self.layout.mark(i.slot), 0)} for i in entry.instances]
            services.append({"service": str(entry.service), "affinity": entry.affinity.value,
                             "affinity_timeout": entry.timeout_ms / 1000, "instances": instances})
        return {"installed": state.table, "resolution": self.layout.resolution, "services": services,
                "tunnels": sorted(t.name for t in state.tunnels), "guards": sorted(state.guards),
                "stale": {"chains": sorted(state.stale.chains), "registry": sorted(s for s, _ in state.stale.registry)},
                "sysctls": self._sysctls([SRC_VALID_MARK, "net.ipv4.conf.all.rp_filter", LWT_HOOKS])}

    # -- execution -------------------------------------------------------------------------------------

    def _execute(self, plan: Plan) -> None:
        if plan.create_table and self.manage_sysctls and self._saved_sysctl != 1:
            self._sysctl_set(SRC_VALID_MARK, 1, known=self._saved_sysctl)
        setup = render_setup(plan, self.layout)
        failures = self._run_batches(setup)
        if failures:
            self._undo_setup(plan)
            raise DataplaneError("programming routes failed: " + "; ".join(failures))
        text = render_transaction(plan, self.layout)
        if text:
            done = self.runner.run(["nft", "-f", "-"], input=text)
            if not done.ok:
                self._undo_setup(plan)
                raise DataplaneError(f"nftables transaction refused: {done.describe()}")
        marks = {self.layout.mark(slot) for slot in plan.evict_slots}
        if marks:
            self._purge_affinity(marks)
        failures = self._run_batches(render_teardown(plan, self.layout), force=True)
        for mark in sorted(marks):
            for family in (4, 6):
                self._conntrack_delete(family, mark)
        if failures:
            raise DataplaneError("removing routes failed: " + "; ".join(failures))

    def _run_batches(self, batches: Batches, *, force: bool = False) -> list[str]:
        """Run the link+IPv4 batch, then the IPv6 batch; return the failures."""
        failures = []
        flag = ["-force"] if force else []
        for argv, lines in ((["ip", *flag, "-batch", "-"], batches.links + batches.v4),
                            (["ip", "-6", *flag, "-batch", "-"], batches.v6)):
            if lines:
                done = self.runner.run(argv, input="\n".join(lines) + "\n")
                if not done.ok:
                    failures.append(done.describe())
        return failures

    def _undo_setup(self, plan: Plan) -> None:
        """Best effort: remove what :func:`render_setup` added for ``plan`` (errors ignored)."""
        batches = Batches()
        for entry in plan.routes:
            old = installed_entry(plan, entry)
            if old is None:
                batches.family(entry.family).append(delete_line(entry, self.layout))
            elif old.forwarding is not None:
                batches.family(entry.family).append(route_line(old, self.layout))
        for family, slot in plan.add_rules:
            batches.family(family).append(rule_line("del", slot, self.layout))
        for family in plan.add_guards:
            batches.family(family).extend(guard_lines("del", self.layout))
        batches.links += [f"link del {tunnel.name}" for tunnel in plan.add_tunnels]
        self._run_batches(batches, force=True)

    # -- input resolution -------------------------------------------------------------------------------

    def _resolve(self, forwarding: Forwarding) -> Forwarding:
        """``forwarding`` ready to install: an SRv6 route without a device gets the one toward its SID."""
        if forwarding.mode is not Encap.SRV6 or forwarding.device is not None:
            return forwarding
        resolved = self._resolved.get(forwarding)
        if resolved is None:
            resolved = self._resolved[forwarding] = replace(forwarding, device=self._route_device(forwarding.remote))
        return resolved

    def _route_device(self, address: IPAddress | None) -> str:
        done = self.runner.run(["ip", "-j", "route", "get", str(address)])
        try:
            device = json.loads(done.stdout)[0]["dev"] if done.ok else None
        except (ValueError, LookupError, TypeError):
            device = None
        if not isinstance(device, str):
            raise DataplaneInputError(f"no route to SRv6 SID {address}: give the forwarding a device")
        return device

    def _check_lwt_hooks(self) -> None:
        values = self._sysctls([LWT_HOOKS])
        if values.get(LWT_HOOKS) != "1":
            raise DataplaneInputError(
                f"srv6 forwarding needs {LWT_HOOKS}=1: without it the kernel encapsulates before conntrack "
                "confirms the flow, so every packet looks new and flows lose their instance "
                "(the switch is host-wide and cannot be turned off until reboot; see docs/dataplane.md)")

    def _check_devices(self, plan: Plan) -> None:
        needed: set[str] = set()
        for entry in plan.routes:
            if entry.forwarding is not None and entry.forwarding.device:
                needed.add(entry.forwarding.device)
        if not needed:
            return
        links = checked(self.runner, ["ip", "-j", "link", "show"], what="listing links")
        try:
            present = {str(link.get("ifname")) for link in json.loads(links.stdout or "[]")}
        except ValueError:
            present = set()
        missing = sorted(needed - present)
        if missing:
            raise DataplaneInputError(f"unknown device(s): {', '.join(missing)}")

    def _first_meta(self) -> Meta:
        saved = None
        if self.manage_sysctls:
            value = self._sysctls([SRC_VALID_MARK]).get(SRC_VALID_MARK)
            saved = int(value) if value is not None and value.isdigit() else None
            self._saved_sysctl = saved
        return Meta(saved_src_valid_mark=saved)

    # -- kernel listings ---------------------------------------------------------------------------------

    def _our_routes(self) -> list[tuple[int, str]]:
        """``route del`` lines for every route in a table of ours (one dump per family)."""
        lines = []
        for family in (4, 6):
            done = checked(self.runner, ["ip", f"-{family}", "-j", "route", "show", "table", "all"],
                           what="listing routes")
            for route in json.loads(done.stdout or "[]"):
                table = route.get("table")
                if isinstance(table, str) and table.isdigit() and self.layout.slot_of_table(int(table)) is not None:
                    lines.append((family, f"route del {route.get('dst')} table {table}"))
        return lines

    def _rules(self, family: int) -> RuleReadback:
        done = checked(self.runner, ["ip", f"-{family}", "-j", "rule", "show"], what="listing rules")
        return parse_rules(done.stdout, self.layout)

    def _routes(self, state: KernelState) -> dict[int, str]:
        """One line per installed instance route (for show), read with one batch per family."""
        found: dict[int, str] = {}
        for family in (4, 6):
            slots = sorted(slot for fam, slot in state.rules if fam == family)
            slots += sorted({e.slot for e in state.instances() if e.family == family} - set(slots))
            if not slots:
                continue
            lines = "".join(f"route show table {self.layout.table(slot)}\n" for slot in slots)
            done = self.runner.run(["ip", f"-{family}", "-j", "-batch", "-"], input=lines)
            for slot, text in zip(slots, done.stdout.splitlines(), strict=False):
                found[slot] = _route_text(text)
        return found

    def _conntrack_counts(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for family in (4, 6):
            done = checked(self.runner, conntrack.list_argv(family, self.layout), what="conntrack -L")
            for mark, count in conntrack.count_marks(done.stdout).items():
                counts[mark] = counts.get(mark, 0) + count
        return counts

    def _conntrack_delete(self, family: int, mark: int) -> int:
        done = self.runner.run(conntrack.delete_argv(family, mark))
        count = conntrack.deleted(done.returncode, done.stderr)
        if count is None:
            raise DataplaneError(f"deleting conntrack entries of mark {mark:#x} failed: {done.describe()}")
        return count

    def _purge_affinity(self, marks: set[int]) -> int:
        """Delete the client-affinity entries pointing at ``marks``; retried when entries expire meanwhile."""
        removed = 0
        for version in (4, 6):
            for _attempt in range(_PURGE_ATTEMPTS):
                keys = self._affinity_keys(version, marks)
                if not keys:
                    break
                done = self.runner.run(["nft", "-f", "-"], input=render_affinity_purge(version, keys, self.layout))
                if done.ok:
                    removed += len(keys)
                    break
                if "No such file or directory" not in done.stderr:
                    raise DataplaneError(f"deleting affinity entries failed: {done.describe()}")
        return removed

    def _affinity_keys(self, version: int, marks: set[int]) -> list[str]:
        done = self.runner.run(["nft", "-j", "list", "map", *TABLE.split(), affinity_map(version)])
        if not done.ok:
            return []
        try:
            objects = json.loads(done.stdout)["nftables"]
        except (ValueError, KeyError, TypeError):
            return []
        keys = []
        for item in objects:
            for element in item.get("map", {}).get("elem", []):
                key = _affinity_key(element, marks)
                if key is not None:
                    keys.append(key)
        return keys

    # -- sysctls --------------------------------------------------------------------------------------------

    def _sysctls(self, names: Sequence[str]) -> dict[str, str]:
        done = self.runner.run(["sysctl", "-e", *names])
        values = {}
        for line in done.stdout.splitlines():
            name, _, value = line.partition(" = ")
            if value:
                values[name.strip()] = value.strip()
        return values

    def _sysctl_set(self, name: str, value: int, known: int | None = None) -> bool:
        """Set ``name`` unless it has ``value`` already (``known``: its current value, read just before)."""
        current = str(known) if known is not None else self._sysctls([name]).get(name)
        if current == str(value):
            return False
        checked(self.runner, ["sysctl", "-q", "-w", f"{name}={value}"], what=f"setting {name}")
        log.info("dataplane_sysctl_set", name=name, value=value, previous=current)
        return True

    def _require_builder(self) -> Builder:
        if self._builder is None:
            self._builder = Builder(self.layout)
        return self._builder


def _affinity_key(element: Any, marks: set[int]) -> str | None:
    """``saddr . daddr`` of an affinity map element whose value is one of ``marks``."""
    if not (isinstance(element, list) and len(element) == 2 and element[1] in marks):
        return None
    key = element[0]
    if isinstance(key, dict) and "elem" in key:
        key = key["elem"].get("val")
    parts = key.get("concat") if isinstance(key, dict) else None
    if not (isinstance(parts, list) and len(parts) == 2 and all(isinstance(p, str) for p in parts)):
        return None
    return f"{parts[0]} . {parts[1]}"


def _route_text(line: str) -> str:
    try:
        routes = json.loads(line)
    except ValueError:
        return "?"
    if not routes:
        return "(none)"
    route = routes[0]
    parts = []
    if "gateway" in route:
        parts.append(f"via {route['gateway']}")
    if route.get("encap") == "seg6":
        parts.append(f"encap seg6 {route.get('mode', '')} segs {','.join(route.get('segs', []))}")
    if "dev" in route:
        parts.append(f"dev {route['dev']}")
    return " ".join(parts)


__all__ = ["CleanupReport", "Completed", "LinuxDataplane"]
