"""Answers of the control socket as text for people (pure: answer in, text out)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

INSTANCE_COLUMNS = ("INSTANCE", "D-BID", "ADMIN", "HEALTH", "PUBLISHED", "FLAGS", "METRICS")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max([len(header[i]), *(len(row[i]) for row in rows)]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
             for line in [header, *rows]]
    return "\n".join(lines) + "\n"


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _published(view: Mapping[str, Any]) -> str:
    if not view.get("published"):
        withheld = view.get("withheld")
        return f"no ({withheld})" if withheld else "no"
    return "yes"


def instance_row(view: Mapping[str, Any]) -> list[str]:
    admin = str(view.get("admin", "?"))
    if view.get("configured_admin") not in (None, admin):
        admin += f" (config: {view['configured_admin']})"
    flags = view.get("published_flags") if view.get("published") else view.get("flags")
    metrics = " ".join(f"{name}={_number(value)}" for name, value in (view.get("metrics") or {}).items())
    return [f"{view.get('service')}/{view.get('instance')}", str(view.get("dbid", "?")), admin,
            str(view.get("health", "?")), _published(view), ",".join(flags or ()) or "-", metrics or "-"]


def instances(answer: Mapping[str, Any]) -> str:
    return table(INSTANCE_COLUMNS, [instance_row(view) for view in answer.get("instances", ())])


def status(answer: Mapping[str, Any]) -> str:
    lines = []
    for name, value in (answer.get("status") or {}).items():
        shown = ", ".join(f"{k} {_number(v)}" for k, v in value.items()) if isinstance(value, dict) else \
            _number(value)
        lines.append(f"{name + ':':<18} {shown}")
    return "\n".join(lines) + "\n"


def transition(answer: Mapping[str, Any]) -> str:
    view = answer.get("instance") or {}
    name = f"{view.get('service')}/{view.get('instance')}"
    if not answer.get("changed"):
        head = f"{name}: already {answer.get('to')}, nothing changed"
    else:
        head = f"{name}: {answer.get('from')} -> {answer.get('to')}"
    return head + "\n" + table(INSTANCE_COLUMNS, [instance_row(view)])


def render(verb: str, answer: Mapping[str, Any]) -> str:
    if not answer.get("ok"):
        return f"error: {answer.get('error', 'unknown error')}\n"
    if verb == "instances":
        return instances(answer)
    if verb == "status":
        return status(answer)
    return transition(answer)
