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
    if isinstance(drain := view.get("drain"), Mapping):
        admin += f" [{_drain(drain)}]"
    flags = view.get("published_flags") if view.get("published") else view.get("flags")
    metrics = " ".join(f"{name}={_number(value)}" for name, value in (view.get("metrics") or {}).items())
    return [f"{view.get('service')}/{view.get('instance')}", str(view.get("dbid", "?")), admin,
            str(view.get("health", "?")), _published(view), ",".join(flags or ()) or "-", metrics or "-"]


def _drain(drain: Mapping[str, Any]) -> str:
    """A drain phase in a few words: ``pending 25s``, ``draining, settling 2s, deadline in 540s``,
    ``drained (sessions)``."""
    phase = str(drain.get("phase"))
    hard = " hard" if drain.get("hard") else ""
    if phase == "pending":
        blocked = drain.get("blocked")
        return f"pending{hard}: {blocked}" if blocked else f"pending{hard} {max(0.0, drain.get('effective') or 0):.0f}s"
    if phase == "draining":
        deadline, settles = drain.get("deadline"), drain.get("settles")
        settling = f", settling {settles:.0f}s" if isinstance(settles, int | float) and settles > 0 else ""
        return f"draining{hard}{settling}" + (f", deadline in {max(0.0, deadline):.0f}s"
                                              if isinstance(deadline, int | float) else "")
    return f"{phase}{hard} ({drain.get('why') or '-'})"


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


# ---------------------------------------------------------------- the router's answers


def _weight(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"


def _ms(value: Any) -> str:
    return f"{value / 1000:.2f}" if isinstance(value, int | float) else "-"


def _ratio(value: Any) -> str:
    return f"{value * 100:.1f}%" if isinstance(value, int | float) else "-"


def _score(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else "-"


def _age(value: Any) -> str:
    return f"{value:.1f}s" if isinstance(value, int | float) else "-"


def _weights(weights: Mapping[str, Any]) -> str:
    return " ".join(f"{dbid}={_weight(weight)}" for dbid, weight in weights.items()) or "-"


def _metrics(metrics: Mapping[str, Any] | None) -> str:
    return " ".join(f"{name}={_number(value)}" for name, value in (metrics or {}).items()) or "-"


def _why(view: Mapping[str, Any]) -> str:
    excluded = view.get("excluded")
    return f"excluded: {excluded}" if excluded else str(view.get("reason") or "-")


def router_services(answer: Mapping[str, Any]) -> str:
    rows = []
    for view in answer.get("services", ()):
        lingering = view.get("lingering") or []
        weights = _weights(view.get("weights") or {}) + (f" (kept for flows: {', '.join(lingering)})"
                                                         if lingering else "")
        rows.append([str(view.get("service")), str(view.get("policy")),
                     str(view.get("fallback") or f"-/{view.get('fallback_policy')}"), str(view.get("status") or "-"),
                     f"{view.get('eligible')}/{view.get('instances')}", weights])
    return table(("SERVICE", "POLICY", "FALLBACK", "STATUS", "ELIGIBLE", "WEIGHTS"), rows)


def _peers(view: Mapping[str, Any]) -> str:
    paths = view.get("paths") or []
    return ",".join(f"{path.get('peer')}#{path.get('path_id')}" + ("(stale)" if path.get("stale") else "")
                    for path in paths) or "-"


def router_instances(answer: Mapping[str, Any]) -> str:
    rows = []
    for view in answer.get("instances", ()):
        path = view.get("path") or {}
        rows.append([str(view.get("service")), str(view.get("instance")), _peers(view),
                     str(view.get("state")), ",".join(view.get("flags") or ()) or "-", _metrics(view.get("metrics")),
                     _age(view.get("metrics_age")), _ms(path.get("rtt_mean_us")), _ratio(path.get("loss_mean")),
                     "yes" if path.get("reachable", True) else "NO", _weight(view.get("weight")), _why(view)])
    return table(("SERVICE", "INSTANCE", "PEER#PATH", "STATE", "FLAGS", "METRICS", "AGE", "RTT(ms)", "LOSS",
                  "REACH", "WEIGHT", "WHY"), rows)


def router_decisions(answer: Mapping[str, Any]) -> str:
    rows = []
    for view in answer.get("decisions", ()):
        excluded = "; ".join(f"{dbid}: {reason}" for dbid, reason in (view.get("excluded") or {}).items()) or "-"
        rows.append([str(view.get("service")), str(view.get("at")), _age(view.get("ago")),
                     str(view.get("changes")), str(view.get("status") or "-"), str(view.get("fallback") or "-"),
                     _weights(view.get("weights") or {}), excluded])
    return table(("SERVICE", "AT", "AGO", "CHANGES", "STATUS", "FALLBACK", "WEIGHTS", "EXCLUDED"), rows)


def router_explain(answer: Mapping[str, Any]) -> str:
    view = answer.get("explain") or {}
    head = (f"service {view.get('service')}  policy {view.get('policy')}  status {view.get('status') or '-'}  "
            f"fallback {view.get('fallback') or '-'} (policy: {view.get('fallback_policy')})"
            f"{'  converging' if view.get('converging') else ''}\n")
    rows = []
    for item in view.get("instances", ()):
        path, scores = item.get("path") or {}, item.get("scores") or {}
        rows.append([str(item.get("instance")), str(item.get("state")), _metrics(item.get("metrics")),
                     _ms(path.get("rtt_mean_us")), _ratio(path.get("loss_mean")),
                     _score(scores.get("compute")), _score(scores.get("network")),
                     f"{_score(scores.get('overall'))} ({scores.get('source')})",
                     _weight(item.get("target")), _weight(item.get("weight")), _why(item)])
    body = table(("INSTANCE", "STATE", "METRICS", "RTT(ms)", "LOSS", "L1 COMPUTE", "L1 NETWORK", "L2 OVERALL",
                  "TARGET", "WEIGHT", "WHY"), rows)
    unknown = [f"{item.get('instance')}: {', '.join(item['unknown'])}" for item in view.get("instances", ())
               if item.get("unknown")]
    return head + body + (f"unknown inputs (assumed): {'; '.join(unknown)}\n" if unknown else "")


def router_flows(answer: Mapping[str, Any]) -> str:
    flows = list(answer.get("flows", ()))
    rows = [[str(view.get("service")), str(view.get("instance")), str(view.get("flows"))] for view in flows]
    return table(("SERVICE", "INSTANCE", "FLOWS"), rows) + f"total: {sum(int(v.get('flows') or 0) for v in flows)}\n"


def router_status(answer: Mapping[str, Any]) -> str:
    return status({"status": answer.get("status") or {}})


def router_rollouts(answer: Mapping[str, Any]) -> str:
    rows = []
    for view in answer.get("rollouts") or ():
        cap = view.get("cap")
        share = view.get("share")
        last = (view.get("history") or [{}])[-1]
        rows.append([str(view.get("service")), str(view.get("version")), str(view.get("status")),
                     f"{view.get('stage')}/{view.get('stages')}", "-" if cap is None else f"{cap:.0%}",
                     "-" if share is None else f"{share:.1%}",
                     f"{_number(view.get('held'))}/{_number(view.get('hold'))}s",
                     ",".join(view.get("clients") or ()) or "all",
                     str(view.get("reason") or last.get("detail") or "-")])
    if not rows:
        return "no rollouts\n"
    return table(("SERVICE", "VERSION", "STATUS", "STAGE", "CAP", "SHARE", "HELD", "CLIENTS", "WHY"), rows)


ROUTER = {"rollout": router_rollouts, "services": router_services, "instances": router_instances,
          "decisions": router_decisions,
          "explain": router_explain, "flows": router_flows, "status": router_status}


def render(verb: str, answer: Mapping[str, Any]) -> str:
    if not answer.get("ok"):
        return f"error: {answer.get('error', 'unknown error')}\n"
    if answer.get("role") == "router" and verb in ROUTER:
        return ROUTER[verb](answer)
    if verb == "instances":
        return instances(answer)
    if verb == "status":
        return status(answer)
    return transition(answer)
