"""Renderers for a comparison: text table, JSON object, CSV files, PNG plots.

``table`` and ``to_json`` return text (pure); ``write_csv`` and ``write_plots`` write
files into a directory.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from pathlib import Path

from dyncast_bgp.sim.stats import Summary, cdf_points, first_bucket, shares
from dyncast_bgp.sim.world import RunResult

COLUMNS = (("policy", "policy", "{}"), ("mean_ms", "mean ms", "{:.1f}"), ("p50_ms", "p50 ms", "{:.1f}"),
           ("p99_ms", "p99 ms", "{:.1f}"), ("over_slo", "over SLO", "{:.2%}"),
           ("peak_utilisation", "peak util", "{:.0%}"), ("oscillation", "oscillation", "{:.3f}"),
           ("retried", "retried", "{}"))


def _cell(fmt: str, value: object) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    return fmt.format(value)


def table(summaries: Mapping[str, Summary], *, markdown: bool = False) -> str:
    """One row per policy: the figures of :class:`Summary` (a Markdown table with ``markdown``)."""
    rows = [[header for _, header, _ in COLUMNS]]
    for policy, summary in summaries.items():
        values = {"policy": policy, **summary.to_dict()}
        rows.append([_cell(fmt, values[key]) for key, _, fmt in COLUMNS])
    widths = [max(len(row[n]) for row in rows) for n in range(len(COLUMNS))]
    if markdown:
        lines = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" if n == 0 else "---:"
                                                               for n in range(len(COLUMNS))) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
        return "\n".join(lines) + "\n"
    lines = ["  ".join(cell.ljust(widths[n]) if n == 0 else cell.rjust(widths[n]) for n, cell in enumerate(row))
             for row in rows]
    return "\n".join(lines) + "\n"


def to_json(scenario: str, seed: int, summaries: Mapping[str, Summary]) -> str:
    """The figures as one JSON object keyed by policy (plus ``_scenario`` and ``_seed``)."""
    body: dict[str, object] = {"_scenario": scenario, "_seed": seed}
    body.update({policy: summary.to_dict() for policy, summary in summaries.items()})
    return json.dumps(body, indent=2, sort_keys=False, allow_nan=False, default=str) + "\n"


def write_csv(directory: Path, results: Mapping[str, RunResult], summaries: Mapping[str, Summary]) -> list[Path]:
    """``summary.csv`` (one row per policy), ``timeline.csv`` (per second, policy, site: share, utilisation),
    ``cdf.csv`` (per policy: response-time quantiles)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    path = directory / "summary.csv"
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["policy", *(key for key, _, _ in COLUMNS[1:]), "requests"])
        for policy, summary in summaries.items():
            values = summary.to_dict()
            writer.writerow([policy, *(values[key] for key, _, _ in COLUMNS[1:]), values["requests"]])
    written.append(path)
    path = directory / "timeline.csv"
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["time_s", "policy", "site", "requests", "share", "utilisation"])
        for policy, result in results.items():
            for bucket, (counts, fractions, usage) in enumerate(zip(result.traffic, shares(result.traffic),
                                                                    result.utilisation, strict=False)):
                for site, name in enumerate(result.site_names):
                    writer.writerow([round(bucket * result.bucket_s, 3), policy, name, counts[site],
                                     round(fractions[site], 5), round(usage[site], 5)])
    written.append(path)
    path = directory / "cdf.csv"
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["policy", "response_ms", "fraction"])
        for policy, result in results.items():
            for value, level in zip(*cdf_points(result), strict=True):
                writer.writerow([policy, value, level])
    written.append(path)
    return written


def write_plots(directory: Path, results: Mapping[str, RunResult], *, prefix: str = "",
                dpi: int = 72) -> list[Path]:
    """``cdf.png`` (response-time CDF per policy) and ``shares.png`` (traffic share per site over time)."""
    import matplotlib  # noqa: PLC0415 - loaded only when plotting

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # noqa: PLC0415

    directory.mkdir(parents=True, exist_ok=True)
    first = next(iter(results.values()))
    title = first.scenario

    figure = Figure(figsize=(7.0, 4.2))
    axes = figure.subplots()
    for policy, result in results.items():
        values, levels = cdf_points(result)
        if values:
            axes.plot(values, levels, label=policy, linewidth=1.4,
                      linestyle="-" if policy in ("weighted", "oracle", "anycast") else "--")
    axes.axvline(first.slo_s * 1000.0, color="grey", linewidth=0.8, linestyle=":")
    axes.set_xscale("log")
    axes.set_xlabel("response time (ms, log scale); dotted: SLO")
    axes.set_ylabel("fraction of requests")
    axes.set_title(f"{title}: response time CDF")
    axes.set_ylim(0.0, 1.0)
    axes.grid(True, which="both", linewidth=0.3)
    axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    cdf_path = directory / f"{prefix}cdf.png"
    figure.savefig(cdf_path, dpi=dpi)

    count = len(results)
    columns = 3 if count > 4 else count
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(3.2 * columns, 2.0 * rows + 0.4))
    grid = figure.subplots(rows, columns, squeeze=False, sharex=True, sharey=True)
    for n, (policy, result) in enumerate(results.items()):
        axes = grid[n // columns][n % columns]
        start = first_bucket(result)
        fractions = shares(result.traffic)[start:]
        times = [(start + b) * result.bucket_s for b in range(len(fractions))]
        series = [[row[s] for row in fractions] for s in range(len(result.site_names))]
        axes.stackplot(times, series, labels=result.site_names, linewidth=0)
        axes.set_title(policy, fontsize=8)
        axes.set_ylim(0.0, 1.0)
        axes.tick_params(labelsize=7)
    for n in range(count, rows * columns):
        grid[n // columns][n % columns].set_visible(False)
    grid[0][0].legend(fontsize=6, loc="upper left", ncol=len(first.site_names))
    figure.suptitle(f"{title}: share of requests per site (time in s)", fontsize=9)
    figure.tight_layout()
    shares_path = directory / f"{prefix}shares.png"
    figure.savefig(shares_path, dpi=dpi)
    return [cdf_path, shares_path]
