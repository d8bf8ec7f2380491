"""Upgrading dyncast itself under load, and going back (issue 6 item 6; docs/operations.md, "Upgrading dyncast").

A copy of labs/intra-site (``intra-upgrade``) whose server-access D-Router runs ExaBGP + ``dyncast router``
through a launcher (``/run/dyncast-lab/intra-upgrade/dyncast``), as a package manager's path would. A canary
rollout is running (stage 1, long holds) and clients keep opening sessions. Then:

1. upgrade: the launcher is pointed at a *new build* (a copy of this source tree whose version is
   ``<version>+next``) and the node's ExaBGP + router are restarted, as ``apt upgrade`` and a service
   restart would do; the new build reports its version, reads the rollout state the old one wrote
   (same rollout, same stage), and adopts the kernel state without flushing it;
2. downgrade: the same back to the old build, which reads what the new one wrote.

No client request fails and no session changes instance across both restarts.

The new build differs from the old only in its version string, so this checks the procedure (kernel state
kept while the router is away, state files carried over, GR, sync before programming); the compatibility of
the formats themselves across versions is tested in tests/unit/test_state_compat.py against golden files.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import dyncast_bgp
from dyncast_bgp.ctl.client import ClientError, call
from dyncast_bgp.ctl.protocol import Request
from dyncast_bgp.lab.clab import load_topology
from dyncast_bgp.lab.demo.tail import EventTail
from dyncast_bgp.lab.loadgen import RequestEvent, session_facts
from dyncast_bgp.lab.poll import expect
from dyncast_bgp.lab.runner import LabRun
from dyncast_bgp.router.status import read_status
from tests.integration.intra_copy import intra_site_copy, router_section, vnf_c_version
from tests.integration.test_intra_site_lab import INSTANCES, skip_reason

pytestmark = [pytest.mark.netns, pytest.mark.lab, pytest.mark.slow, pytest.mark.timing]

NAME = "intra-upgrade"
RUN = Path(f"/run/dyncast-lab/{NAME}")
STATUS = RUN / "access.status.json"
ROUTER_SOCK = RUN / "router.sock"
LAUNCHER = RUN / "dyncast"
DSID, PORT = "203.0.113.10", 8080
SERVICE = f"{DSID}/32"
VENV_BIN = Path(sys.executable).parent
OLD = dyncast_bgp.__version__
NEW = f"{OLD}+next"


def lab_copy(directory: Path) -> Path:
    """intra-site renamed; the access router runs through LAUNCHER, with a control socket and rollout state."""
    def topology(text: str) -> str:
        old = "cmd: dyncast exabgp-run --role router"
        assert old in text, "labs/intra-site changed: the access router's cmd line was not found"
        return text.replace(old, f"cmd: {LAUNCHER} exabgp-run --role router")

    return intra_site_copy(
        directory, NAME, RUN, topology=topology, agent=lambda text: vnf_c_version(text, 2),
        access=lambda text: router_section(text, f"  control_socket: {ROUTER_SOCK}\n"
                                                 f"  rollout_state: {RUN}/rollouts.json\n"))


def new_build(directory: Path) -> Path:
    """A copy of the package with version NEW: what `pip install` of the next release would put in place."""
    tree = directory / "next"
    shutil.copytree(Path(dyncast_bgp.__file__).parent, tree / "dyncast_bgp",
                    ignore=shutil.ignore_patterns("__pycache__"))
    init = tree / "dyncast_bgp" / "__init__.py"
    text = init.read_text()
    assert f'__version__ = "{OLD}"' in text
    init.write_text(text.replace(f'__version__ = "{OLD}"', f'__version__ = "{NEW}"'))
    return tree


def point_launcher(tree: Path | None) -> None:
    """LAUNCHER runs the installed build (None) or the one in ``tree``."""
    path = f"PYTHONPATH={tree} " if tree is not None else ""
    LAUNCHER.write_text(f"#!/bin/sh\n{path}exec {VENV_BIN / 'dyncast'} \"$@\"\n")
    LAUNCHER.chmod(0o755)


def router(verb: str, **fields: Any) -> dict[str, Any]:
    return call(ROUTER_SOCK, Request(verb, fields), timeout=3.0, role="router")


def running_version() -> str | None:
    try:
        return str(router("status")["status"]["version"])
    except (ClientError, OSError, KeyError):
        return None


def rollout_view() -> dict[str, Any]:
    views = [v for v in router("rollout", action="status").get("rollouts") or () if v.get("service") == SERVICE]
    return views[0] if views else {}


def synced_since(since: float) -> bool:
    document = read_status(STATUS)
    return bool(document and float(document.get("time", 0)) >= since and document.get("synced")
                and int((document.get("counters") or {}).get("applies", 0)) >= 0)


def restart_into(run: LabRun, tree: Path | None, version: str) -> dict[str, float]:
    point_launcher(tree)
    began = time.time()
    run.restart_node("access")
    expect(running_version, lambda v: v == version, timeout=30.0, wait=0.1, what=f"the router reporting {version}")
    answering = time.time() - began
    expect(lambda: synced_since(began), bool, timeout=40.0, wait=0.2, what="the restarted router in sync")
    return {"answering": answering, "synced": time.time() - began}


def test_upgrade_and_downgrade_of_the_router_under_load_break_no_flow(tmp_path: Path) -> None:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    RUN.mkdir(parents=True, exist_ok=True)
    for stale in (STATUS, RUN / "rollouts.json"):
        stale.unlink(missing_ok=True)
    point_launcher(None)
    try:
        run_upgrade_and_downgrade(tmp_path)
    finally:
        LAUNCHER.unlink(missing_ok=True)


def run_upgrade_and_downgrade(tmp_path: Path) -> None:
    tree = new_build(tmp_path)
    began = time.time()
    with LabRun(load_topology(lab_copy(tmp_path)), stop_grace=2.0) as run:
        expect(lambda: synced_since(began), bool, timeout=60.0, wait=0.25, what="the router in sync")
        assert running_version() == OLD
        plan = tmp_path / "canary.json"
        plan.write_text(json.dumps({
            "name": "web-v2", "service": SERVICE, "version": 2,
            "stages": [{"share": 30, "hold": 300}, {"share": 100, "hold": 300}],
            "kpis": {"max_rtt_ms": 10, "breach_for": 5}, "rollback": "soft", "auto_commit": False}))
        done = subprocess.run([str(VENV_BIN / "dyncast"), "ctl", "--socket", str(ROUTER_SOCK), "rollout", "start",
                               str(plan)], capture_output=True, text=True, timeout=20, check=False)
        assert done.returncode == 0, (done.stdout, done.stderr)
        before = rollout_view()
        out = tmp_path / "load.jsonl"
        load = run.spawn("client", "load", [
            str(VENV_BIN / "dyncast"), "lab", "load", "--target", f"{DSID}:{PORT}", "--rate", "10",
            "--requests-per-session", "6", "--think-ms", "400", "--timeout", "5", "--seed", "5",
            "--duration", "60", "--client", "client", "--out", str(out), "--log-level", "warning"])
        tail, seen = EventTail(out, "client"), list[RequestEvent]()

        def requests() -> int:
            seen.extend(tail.read())
            return len(seen)

        expect(requests, lambda n: n >= 30, timeout=20.0, wait=0.2, what="client requests flowing",
               diagnose=load.log_tail)

        up = restart_into(run, tree, NEW)
        after_up = rollout_view()
        time.sleep(3.0)  # load on the new build
        down = restart_into(run, None, OLD)
        after_down = rollout_view()
        time.sleep(3.0)
        run.stop(load)
        seen.extend(tail.read())

    failed = [e for e in seen if not e.ok]
    moved = [key for key, fact in session_facts(seen).items() if fact.moved_at is not None]
    served = {name: sum(1 for e in seen if e.ok and e.instance == name) for name in INSTANCES}
    print(f"\nupgrade {OLD} -> {NEW}: control socket answering after {up['answering']:.1f} s, in sync after "
          f"{up['synced']:.1f} s; downgrade: {down['answering']:.1f} s / {down['synced']:.1f} s; "
          f"rollout {before.get('status')} stage {before.get('stage')} -> {after_up.get('status')} stage "
          f"{after_up.get('stage')} -> {after_down.get('status')} stage {after_down.get('stage')}; "
          f"{len(seen)} requests ({served}), {len(failed)} failed, {len(moved)} sessions moved")
    assert not failed, f"{len(failed)} failed requests, e.g. {failed[:3]}"
    assert not moved, f"sessions moved: {moved[:5]}"
    for view in (after_up, after_down):
        assert (view.get("name"), view.get("status"), view.get("stage")) == \
            (before.get("name"), "running", before.get("stage")), (before, view)
