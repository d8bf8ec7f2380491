"""`dyncast simulate SCENARIO`: compare steering policies on a simulated scenario.

Prints one row per policy (mean, p50, p99 response time, share over the SLO,
peak site utilisation, oscillation index); ``--json`` prints the same figures
as one JSON object keyed by policy; ``--out DIR`` also writes CSV files and PNG
plots there. A progress bar (stderr, terminals only) follows long runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dyncast_bgp.sim.policies import POLICIES
from dyncast_bgp.sim.scenario import ScenarioError, builtin_names, load


def register(subparsers: Any) -> None:
    simulate = subparsers.add_parser(
        "simulate", help="compare steering policies (anycast, dyncast, oracle, ...) on a simulated scenario",
        description="Simulate SCENARIO (a YAML file, or a built-in name: " + ", ".join(builtin_names())
        + ") under each policy and print the response-time figures.")
    simulate.add_argument("scenario", metavar="SCENARIO")
    simulate.add_argument("--policies", nargs="+", metavar="POLICY",
                          help=f"policies to compare (comma or space separated; default: the scenario's, else "
                          f"all): {', '.join(POLICIES)}")
    simulate.add_argument("--seed", type=int, default=None, help="random seed (default: the scenario's)")
    simulate.add_argument("--duration", type=float, default=None, metavar="S", help="simulated seconds")
    simulate.add_argument("--propagation", type=float, default=None, metavar="S",
                          help="BGP propagation delay of metric updates (seconds; e.g. 1, 5, 15)")
    simulate.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    simulate.add_argument("--out", type=Path, default=None, metavar="DIR", help="write CSV files and PNG plots here")
    simulate.add_argument("--no-progress", action="store_true", help="no progress bar")
    simulate.set_defaults(handler=_run)


def _policies(requested: list[str] | None, default: tuple[str, ...]) -> list[str]:
    names = [part for item in requested for part in item.split(",") if part] if requested else list(default)
    unknown = [name for name in names if name not in POLICIES]
    if unknown:
        raise ValueError(f"unknown policies {unknown}; known: {', '.join(POLICIES)}")
    return names or list(POLICIES)


def _run(args: argparse.Namespace) -> int:
    try:
        scenario = load(args.scenario).with_changes(duration_s=args.duration, propagation_s=args.propagation,
                                                    seed=args.seed)
        policies = _policies(args.policies, scenario.policies)
    except (ScenarioError, ValueError) as exc:
        print(f"dyncast simulate: {exc}", file=sys.stderr)
        return 2

    from rich.console import Console  # noqa: PLC0415 - only for this command
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    from dyncast_bgp.sim.report import table, to_json, write_csv, write_plots  # noqa: PLC0415
    from dyncast_bgp.sim.stats import summarise  # noqa: PLC0415
    from dyncast_bgp.sim.world import RunResult, simulate  # noqa: PLC0415

    console = Console(stderr=True)
    results: dict[str, RunResult] = {}
    with Progress(TextColumn("{task.description:<14}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), console=console, transient=True,
                  disable=args.no_progress or not console.is_terminal) as progress:
        total = scenario.duration_s * len(policies)
        task = progress.add_task(scenario.name, total=total)
        for n, policy in enumerate(policies):
            progress.update(task, description=policy)
            offset = n * scenario.duration_s

            def tick(now: float, offset: float = offset) -> None:
                progress.update(task, completed=offset + now)

            results[policy] = simulate(scenario, policy, progress=tick)
    summaries = {policy: summarise(result) for policy, result in results.items()}
    if args.json:
        sys.stdout.write(to_json(scenario.name, scenario.seed, summaries))
    else:
        print(f"{scenario.name}: {scenario.duration_s:g} s simulated (first {scenario.warmup_s:g} s not counted), "
              f"seed {scenario.seed}, SLO {scenario.slo_ms:g} ms, metrics propagation "
              f"{scenario.information.propagation_s:g} s")
        sys.stdout.write(table(summaries))
    if args.out is not None:
        try:
            written = [*write_csv(args.out, results, summaries), *write_plots(args.out, results)]
        except OSError as exc:
            print(f"dyncast simulate: cannot write {args.out}: {exc}", file=sys.stderr)
            return 1
        print("wrote " + ", ".join(str(path) for path in written), file=sys.stderr)
    return 0
