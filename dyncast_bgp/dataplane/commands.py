"""`dyncast dataplane apply FILE | show [--json] | evict KEY... | cleanup` (static mode).

Each command builds a fresh :class:`~dyncast_bgp.dataplane.linux.LinuxDataplane`
(the backend the router uses), which reconciles with what is installed
before it changes anything: running ``apply`` twice with the same file
changes nothing the second time. ``--netns NS`` runs every kernel command
inside a network namespace (labs, tests).

Exit codes: 0 done, 1 the kernel refused or a command failed, 2 bad input
(the file, an unknown instance, a refused desired state), naming the field.
Standalone use before ``dataplane`` is wired into ``dyncast``:
``python -m dyncast_bgp.dataplane.commands apply FILE``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dyncast_bgp.dataplane.desired import DataplaneError, DataplaneInputError
from dyncast_bgp.dataplane.fileformat import FileError, parse
from dyncast_bgp.dataplane.linux import LinuxDataplane
from dyncast_bgp.dataplane.readback import ReadbackError, parse_key
from dyncast_bgp.dataplane.runner import LocalRunner, NetnsRunner, Runner
from dyncast_bgp.obs.log import configure

OK, FAILED, BAD_INPUT = 0, 1, 2


def register(subparsers: Any) -> None:
    dataplane = subparsers.add_parser("dataplane", help="install, show or remove the ingress dataplane (static mode)")
    dataplane.add_argument("--netns", metavar="NS", help="program the kernel of network namespace NS")
    dataplane.add_argument("--verbose", action="store_true", help="log every kernel change (stderr)")
    actions = dataplane.add_subparsers(dest="dataplane_command", metavar="ACTION", required=True)
    apply = actions.add_parser("apply", help="install a desired state from a YAML/JSON file (diffed, atomic)")
    apply.add_argument("file")
    apply.add_argument("--json", action="store_true", help="print the result as JSON")
    apply.set_defaults(handler=_apply)
    show = actions.add_parser("show", help="what is installed, with live flow counts per instance")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_show)
    evict = actions.add_parser("evict", help="hard removal: delete instances' conntrack and affinity entries")
    evict.add_argument("keys", nargs="+", metavar="KEY", help="instance key, e.g. 203.0.113.10/32@192.0.2.11")
    evict.set_defaults(handler=_evict)
    cleanup = actions.add_parser("cleanup", help="remove everything the dataplane installed, and nothing else")
    cleanup.set_defaults(handler=_cleanup)


def backend(args: argparse.Namespace) -> LinuxDataplane:
    runner: Runner = NetnsRunner(args.netns) if getattr(args, "netns", None) else LocalRunner()
    return LinuxDataplane(runner=runner)


def _logging(args: argparse.Namespace) -> None:
    """Logs go to stderr (stdout carries the result), info level only with --verbose."""
    configure("info" if getattr(args, "verbose", False) else "warning", fmt="console")


def _fail(message: str, code: int) -> int:
    print(f"dyncast dataplane: {message}", file=sys.stderr)
    return code


def _apply(args: argparse.Namespace) -> int:
    _logging(args)
    try:
        desired = parse(Path(args.file).read_text(encoding="utf-8"), args.file)
    except OSError as exc:
        return _fail(f"cannot read {args.file}: {exc}", BAD_INPUT)
    except FileError as exc:
        return _fail(f"{len(exc.problems)} problem(s)\n{exc}", BAD_INPUT)
    try:
        result = backend(args).apply(desired)
    except DataplaneInputError as exc:
        return _fail(str(exc), BAD_INPUT)
    except DataplaneError as exc:
        return _fail(str(exc), FAILED)
    if args.json:
        print(json.dumps({"changed": result.changed, "seconds": result.seconds, "summary": result.summary,
                          "details": dict(result.details)}))
    else:
        print(f"{args.file}: {result.summary} ({result.seconds * 1000:.1f} ms)")
    return OK


def _show(args: argparse.Namespace) -> int:
    _logging(args)
    try:
        data = backend(args).describe()
    except DataplaneError as exc:
        return _fail(str(exc), FAILED)
    print(json.dumps(data, indent=2) if args.json else render_show(data))
    return OK


def render_show(data: dict[str, Any]) -> str:
    """The human form of :meth:`LinuxDataplane.describe`."""
    if not data["installed"]:
        return "dataplane: nothing installed (no table inet dyncast)"
    instances = sum(len(service["instances"]) for service in data["services"])
    lines = [f"dataplane: {len(data['services'])} services, {instances} instances, "
             f"resolution {data['resolution']} buckets"]
    for service in data["services"]:
        timeout = f" timeout {service['affinity_timeout']:g}s" if service["affinity"] == "client" else ""
        lines.append(f"{service['service']}  affinity {service['affinity']}{timeout}")
        for item in service["instances"]:
            label = item["name"] or item["binding"]
            lines.append(f"  {label:<12} {item['key']:<40} mark {item['mark']} table {item['table']} "
                         f"share {item['share'] * 100:6.2f}%  flows {item['flows']:<6} {item['route'] or '(no route)'}")
    if data["tunnels"]:
        lines.append(f"tunnels: {', '.join(data['tunnels'])}")
    stale = data["stale"]
    if stale["chains"] or stale["registry"]:
        lines.append(f"stale (removed by the next apply): {stale}")
    lines.append("sysctls: " + ", ".join(f"{k}={v}" for k, v in data["sysctls"].items()))
    return "\n".join(lines)


def _evict(args: argparse.Namespace) -> int:
    _logging(args)
    try:
        keys = [parse_key(text) for text in args.keys]
    except ReadbackError as exc:
        return _fail(str(exc), BAD_INPUT)
    try:
        count = backend(args).evict(keys)
    except DataplaneInputError as exc:
        return _fail(str(exc), BAD_INPUT)
    except DataplaneError as exc:
        return _fail(str(exc), FAILED)
    print(f"evicted {count} entries")
    return OK


def _cleanup(args: argparse.Namespace) -> int:
    _logging(args)
    try:
        report = backend(args).cleanup()
    except DataplaneError as exc:
        return _fail(str(exc), FAILED)
    print(f"cleanup: {report.summary()}")
    for problem in report.problems:
        print(f"  problem: {problem}", file=sys.stderr)
    return FAILED if report.problems else OK


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dyncast_bgp.dataplane.commands ...``: the same commands without the ``dyncast`` wrapper."""
    parser = argparse.ArgumentParser(prog="dyncast")
    subparsers = parser.add_subparsers(dest="command", required=True)
    register(subparsers)
    args = parser.parse_args(["dataplane", *(sys.argv[1:] if argv is None else argv)])
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
