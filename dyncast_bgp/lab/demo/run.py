"""`dyncast lab demo`: the three-site lab, client load, the scripted story, a live view, a report.

The order of things:

1. bring ``labs/three-site`` up in network namespaces (:class:`LabRun`), with
   progress on the terminal;
2. wait until both ingress routers have a decision covering every instance
   (their status files, ``router.status_file``);
3. start one load generator per client site (``dyncast lab load``);
4. play the story's phases (:mod:`.story`), each opened by its actions
   (:mod:`.actions`), while the live view (:mod:`.view`) shows the share of
   new sessions per site, what the routers believe and decide, and the
   clients' latency and failures;
5. stop the load, tear the lab down, write the report (Markdown + PNG,
   :mod:`dyncast_bgp.lab.report`) with the verdict (:mod:`.verdict`), and
   print where it is.

The lab is torn down on every exit path (the ``with`` block), Ctrl-C included.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.live import Live

from dyncast_bgp.lab.clab import load_topology
from dyncast_bgp.lab.demo.actions import SERVICE_PORT, perform
from dyncast_bgp.lab.demo.routers import RouterSampler
from dyncast_bgp.lab.demo.story import Story, three_site_story
from dyncast_bgp.lab.demo.tail import EventTail
from dyncast_bgp.lab.demo.verdict import Check, checks, markdown
from dyncast_bgp.lab.demo.view import Traffic, ViewState, render
from dyncast_bgp.lab.errors import LabError
from dyncast_bgp.lab.loadgen import RequestEvent, session_facts, window_stats
from dyncast_bgp.lab.process import Process
from dyncast_bgp.lab.report import write_report_from_events
from dyncast_bgp.lab.runner import LabRun

DSID = "203.0.113.10"
WINDOW = 5.0  # seconds of client events behind the live shares
TICK = 0.5
READY_TIMEOUT = 90.0


@dataclass
class DemoOptions:
    topology: Path
    out_dir: Path
    scale: float = 1.0
    rate: float = 6.0  # new sessions per second per client site
    requests_per_session: int = 6
    think_ms: float = 200.0
    live: bool = True


@dataclass
class DemoResult:
    report: Path
    checks: list[Check]
    events: int
    phase_starts: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)


def dyncast_argv() -> list[str]:
    return [str(Path(sys.executable).with_name("dyncast"))]


class Demo:
    def __init__(self, options: DemoOptions, console: Console, story: Story | None = None) -> None:
        self.options = options
        self.console = console
        self.story = story or three_site_story(options.scale)
        names = {address: name for name, address in self.story.instance_address.items()}
        self.sampler = RouterSampler(self.story.status_files, names)
        self.sites = {instance: site.name for site in self.story.sites for instance in site.instances}
        self.events: list[RequestEvent] = []
        self.tails = {client: EventTail(options.out_dir / f"events-{client}.jsonl", client)
                      for client in self.story.clients}
        self.log: list[str] = []
        self.starts: dict[str, float] = {}

    # ------------------------------------------------------------------ the whole run

    def run(self) -> DemoResult:
        options = self.options
        options.out_dir.mkdir(parents=True, exist_ok=True)
        for tail in self.tails.values():
            tail.path.unlink(missing_ok=True)
        topology = load_topology(options.topology)
        began = time.monotonic()
        self.sampler.since = time.time()
        with self.console.status("starting the lab") as status:
            def progress(message: str) -> None:
                status.update(f"[{time.monotonic() - began:5.1f} s] {message}")
            lab = LabRun(topology, progress=progress)
            lab.start()
        try:
            with lab:
                self._wait_ready(lab, began)
                loads = self._start_load(lab)
                try:
                    end = self._play(lab)
                finally:
                    lab.stop(*loads)
                    self._collect()
        finally:
            self.console.print(f"lab torn down ({time.monotonic() - began:.0f} s since start)")
        return self._report(end)

    def _wait_ready(self, lab: LabRun, began: float) -> None:
        expected = len(self.story.instance_address)
        deadline = time.monotonic() + READY_TIMEOUT
        with self.console.status("waiting for BGP and the first decisions") as status:
            while not self.sampler.ready(expected):
                dead = lab.dead()
                if dead:
                    raise LabError("lab processes died while starting: " + "; ".join(p.describe() for p in dead))
                if time.monotonic() > deadline:
                    seen = {router: len(rows) for router, rows in self.sampler.latest.items()}
                    raise LabError(f"no decision covering {expected} instances at every router within "
                                   f"{READY_TIMEOUT:g} s (instances seen: {seen or 'no status yet'}); "
                                   f"lab logs: {lab.workdir}")
                self.sampler.sample(time.time())
                status.update(f"[{time.monotonic() - began:5.1f} s] waiting for BGP and the first decisions "
                              f"({sum(len(r) for r in self.sampler.latest.values())} instance paths seen)")
                time.sleep(0.25)
        for client in self.story.clients:  # one real request end to end from every client site
            probe = lab.exec(client, ["curl", "-sS", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}",
                                      f"http://{DSID}:{SERVICE_PORT}/"], check=False)
            if probe.stdout.strip() != "200":
                raise LabError(f"{client}: a request to {DSID}:{SERVICE_PORT} gave "
                               f"{probe.stdout.strip() or probe.stderr.strip()}; lab logs: {lab.workdir}")
        self.console.print(f"lab ready in {time.monotonic() - began:.1f} s: "
                           f"{len(self.story.routers)} ingress routers see {expected} instances")

    def _start_load(self, lab: LabRun) -> list[Process]:
        options = self.options
        processes = []
        for seed, client in enumerate(self.story.clients, start=1):
            argv = [*dyncast_argv(), "lab", "load", "--target", f"{DSID}:{SERVICE_PORT}", "--rate", f"{options.rate:g}",
                    "--requests-per-session", str(options.requests_per_session), "--think-ms",
                    f"{options.think_ms:g}", "--timeout", "3", "--seed", str(seed), "--client", client,
                    "--out", str(self.tails[client].path), "--log-level", "warning"]
            processes.append(lab.spawn(client, f"load-{client}", argv))
        deadline = time.monotonic() + 30.0
        with self.console.status("starting client load"):
            while not self.events:  # the story's clock starts with the first request, not before
                self._collect()
                if time.monotonic() > deadline:
                    raise LabError("the load generators recorded no request within 30 s: "
                                   + "; ".join(process.describe() for process in processes))
                time.sleep(0.1)
        return processes

    # ------------------------------------------------------------------ the story

    def _play(self, lab: LabRun) -> float:
        story = self.story
        live = Live(console=self.console, refresh_per_second=4, transient=False) if self.options.live else None
        try:
            if live is not None:
                live.start()
            for index, phase in enumerate(story.phases, start=1):
                start = time.time()
                self.starts[phase.name] = start
                self._note(f"{phase.title}")
                for action in phase.actions:
                    try:
                        self._note("  " + perform(lab, story, action))
                    except LabError as exc:
                        self._note(f"  action failed: {exc}")
                while (left := start + phase.seconds - time.time()) > 0:
                    self._tick(lab, index, phase.name, start=start, left=left, live=live)
                    time.sleep(min(TICK, left))
            return time.time()
        finally:
            if live is not None:
                live.stop()

    def _note(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        self.log.append(f"{stamp} {text}")
        if not self.options.live:
            self.console.print(f"{stamp} {text}")

    def _tick(self, lab: LabRun, index: int, phase_name: str, *, start: float, left: float,
              live: Live | None) -> None:
        now = time.time()
        self._collect()
        rows = self.sampler.sample(now)
        dead = [process for process in lab.dead() if not process.name.startswith("load-")]
        for process in dead:
            message = f"process ended: {process.describe()}"
            if not any(message in line for line in self.log):
                self._note(message)
        if live is None:
            return
        recent = [event for event in self.events if event.t >= now - WINDOW]
        stats = window_stats(recent, now - WINDOW, now, session_facts(recent))
        total_failed = sum(1 for event in self.events if not event.ok)
        moved = sum(1 for fact in session_facts(self.events).values() if fact.moved_at is not None) \
            if len(self.events) < 200_000 else 0
        phase = next(p for p in self.story.phases if p.name == phase_name)
        state = ViewState(phase=phase.title, phase_index=index, phases=len(self.story.phases),
                          elapsed=now - start, remaining=left, expect=f"expected: {phase.expect}",
                          site_share=stats.grouped(self.sites).shares, instance_site=self.sites, rows=rows,
                          traffic=Traffic(requests_per_second=stats.requests / WINDOW, p50_ms=stats.p50_ms,
                                          p99_ms=stats.p99_ms, failed=total_failed, moved=moved,
                                          sessions=len(session_facts(self.events))),
                          events=self.log)
        live.update(render(state))

    def _collect(self) -> None:
        for tail in self.tails.values():
            self.events.extend(tail.read())

    # ------------------------------------------------------------------ the report

    def _report(self, end: float) -> DemoResult:
        story = self.story
        phases = [(self.starts[p.name], p.title, p.expect) for p in story.phases if p.name in self.starts]
        series = {group.replace(" ", "-"): {name: list(points) for name, points in values.items()}
                  for group, values in self.sampler.series.items()}
        files = write_report_from_events(self.options.out_dir, self.events, phases, series=series,
                                         sites=self.sites, title="dyncast-bgp three-site demo", end=end, bucket_s=2.0,
                                         sources=[tail.path.name for tail in self.tails.values()])
        results = checks(self.events, story, self.starts, end)
        text = files.markdown.read_text(encoding="utf-8")
        extra = [markdown(results), "## What happened", "", *[f"- {line}" for line in self.log], ""]
        skipped = {tail.path.name: tail.problem for tail in self.tails.values() if tail.skipped}
        if skipped:
            extra += ["Unreadable event lines: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()), ""]
        files.markdown.write_text(text.rstrip() + "\n\n" + "\n".join(extra), encoding="utf-8")
        return DemoResult(report=files.markdown, checks=results, events=len(self.events),
                          phase_starts=dict(self.starts))


def run_demo(options: DemoOptions, console: Console | None = None,
             on_result: Callable[[DemoResult], None] | None = None) -> int:
    console = console or Console()
    result = Demo(options, console).run()
    for check in result.checks:
        mark = "[green]ok[/green]" if check.ok else "[bold red]FAILED[/bold red]"
        console.print(f"{mark}  {check.name}: {check.detail}")
    console.print(f"report: {result.report} (and PNG plots beside it); {result.events} client requests recorded")
    if on_result is not None:
        on_result(result)
    return 0 if result.ok else 1
