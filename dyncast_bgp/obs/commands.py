"""`dyncast audit`: read the router's decision audit log back to explain a past incident.

    dyncast audit FILE [--service S] [--instance D-BID] [--since T] [--until T] [--json]
    dyncast audit FILE --at T [--service S]          # the decisions in force at T, and why

FILE is ``router.audit_log``; its rotated files (FILE.1 ... FILE.N) are read
too, oldest first. T is an ISO 8601 time (``2025-03-01T10:15:00Z``; no zone
means UTC), epoch seconds, or a duration back from now (``90s``, ``15m``, ``2h``, ``1d``).
Exit codes: 0 ok, 1 no such file, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from dyncast_bgp.router.audit import audit_files, read_records

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def register(subparsers: Any) -> None:
    audit = subparsers.add_parser("audit", help="read the router's decision audit log (router.audit_log): what "
                                  "changed, when and why")
    audit.add_argument("file", metavar="FILE", help="the audit log (its rotated files FILE.N are read too)")
    audit.add_argument("--service", help="only this service (D-SID)")
    audit.add_argument("--instance", help="only changes that concern this D-BID")
    audit.add_argument("--since", type=_time_arg, help="from this time (ISO 8601, epoch seconds, or 15m ago as 15m)")
    audit.add_argument("--until", type=_time_arg, help="up to this time")
    audit.add_argument("--at", type=_time_arg, help="show the decision in force at this time, per service")
    audit.add_argument("--json", action="store_true", help="print the matching records as JSON lines")
    audit.set_defaults(handler=_run)


def parse_time(text: str, *, now: float) -> float:
    """ISO 8601 (UTC unless a zone is given), epoch seconds, or a duration back from ``now``."""
    text = text.strip()
    if text and text[-1] in UNITS and _is_number(text[:-1]):
        return now - float(text[:-1]) * UNITS[text[-1]]
    if _is_number(text):
        return float(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a time: {text!r} (ISO 8601, epoch seconds, or a duration like 15m)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _time_arg(text: str) -> float:
    try:
        return parse_time(text, now=time.time())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def service_name(text: str) -> str:
    return text if "/" in text else text + ("/128" if ":" in text else "/32")


def select(records: Iterable[Mapping[str, Any]], *, service: str | None = None, instance: str | None = None,
           since: float | None = None, until: float | None = None) -> Iterator[Mapping[str, Any]]:
    wanted = service_name(service) if service else None
    for record in records:
        ts = float(record["ts"])
        if (since is not None and ts < since) or (until is not None and ts > until):
            continue
        if wanted is not None and record.get("service") != wanted:
            continue
        if instance is not None and not _concerns(record, instance):
            continue
        yield record


def _concerns(record: Mapping[str, Any], dbid: str) -> bool:
    if dbid in (record.get("removed") or ()):
        return True
    entry = (record.get("instances") or {}).get(dbid)
    return entry is not None and (entry.get("weight") != entry.get("old_weight") or "changed" in entry
                                  or "added" in entry)


def in_force(records: Iterable[Mapping[str, Any]], at: float) -> dict[str, Mapping[str, Any]]:
    """Per service, the last record at or before ``at`` (the decision in force then)."""
    latest: dict[str, Mapping[str, Any]] = {}
    for record in records:
        if float(record["ts"]) <= at:
            latest[str(record["service"])] = record
    return latest


def _w(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"


def _changes(changed: Mapping[str, Any]) -> str:
    parts: list[str] = []
    for name, change in changed.items():
        if isinstance(change, Mapping):
            parts.extend(f"{name}.{field} {_v(pair[0])} -> {_v(pair[1])}" for field, pair in change.items())
        else:
            parts.append(f"{name} {_v(change[0])} -> {_v(change[1])}")
    return "; ".join(parts)


def _v(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(item) for item in value) or "-"
    return "-" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def render_record(record: Mapping[str, Any], *, instance: str | None = None) -> str:
    head = f"{record.get('time')}  {record.get('service')}"
    if record.get("status"):
        head += f"  [{record['status']}]"
    if record.get("fallback"):
        head += f"  fallback {record['fallback']}"
    lines = [head]
    for dbid, entry in (record.get("instances") or {}).items():
        if instance is not None and dbid != instance:
            continue
        line = f"  {dbid:<20} {_w(entry.get('old_weight'))} -> {_w(entry.get('weight'))}  {entry.get('state')}"
        line += f"  excluded: {entry['excluded']}" if entry.get("excluded") else f"  {entry.get('reason') or ''}"
        if entry.get("added"):
            line += "  (new instance)"
        if entry.get("changed"):
            line += f"\n  {'':<20} because {_changes(entry['changed'])}"
        lines.append(line.rstrip())
    for dbid in record.get("removed") or ():
        if instance is None or dbid == instance:
            lines.append(f"  {dbid:<20} gone from BGP (kept at weight 0 for its flows)")
    return "\n".join(lines) + "\n"


def _run(args: argparse.Namespace) -> int:
    files = audit_files(args.file)
    if not files:
        print(f"dyncast audit: {args.file}: no such file", file=sys.stderr)
        return 1
    records: list[Mapping[str, Any]] = []
    skipped = 0
    for path, number, item in read_records(files):
        if isinstance(item, str):
            skipped += 1
            if skipped <= 5:
                print(f"dyncast audit: {path}:{number}: {item}", file=sys.stderr)
            continue
        records.append(item)
    records.sort(key=lambda record: float(record["ts"]))  # files are in order; a clock step may not be
    out = sys.stdout
    try:
        if args.at is not None:
            chosen = list(select(in_force(records, args.at).values(), service=args.service))
            for record in sorted(chosen, key=lambda record: str(record["service"])):
                out.write(json.dumps(record) + "\n" if args.json else render_record(record))
            if not chosen:
                print("dyncast audit: no decision recorded at or before that time", file=sys.stderr)
            return 0
        for record in select(records, service=args.service, instance=args.instance, since=args.since,
                             until=args.until):
            out.write(json.dumps(record) + "\n" if args.json else render_record(record, instance=args.instance))
    except BrokenPipeError:
        return 0
    return 0
