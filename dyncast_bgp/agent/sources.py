"""Metric collectors: the agent's I/O edges that read one instance's load.

One collector per configured source (:data:`dyncast_bgp.config.schema.MetricSource`):

- ``procfs``: host CPU (``/proc/stat`` tick deltas) and memory (``/proc/meminfo``);
- ``cgroup``: CPU and memory of one cgroup v2 relative to its own allowance;
- ``http``: a JSON object fetched with GET (http:// and https://);
- ``command``: a command (argv, no shell) printing JSON or ``name=value`` lines;
- ``file``: a file holding JSON or ``name=value`` lines.

Every collector's :meth:`Collector.collect` returns registry metric names
(:data:`dyncast_bgp.config.schema.METRIC_NAMES`) mapped to finite, in-range
floats, or raises :class:`SourceError` saying which source failed and why. No
other exception escapes (cancellation excepted), so the runtime needs exactly one
``except`` clause per collect.

CPU utilisation is a rate, so it needs two samples. The first ``collect`` of a
procfs or cgroup collector takes a short internal sample (two reads
:data:`FIRST_SAMPLE` seconds apart, less when the source's timeout is shorter) so
that the very first announcement already carries CPU; every later ``collect``
reports the average since the previous one (i.e. over the collect interval).

HTTP and command sources use the I/O helpers shared with
:mod:`dyncast_bgp.agent.health` (:mod:`dyncast_bgp.agent.httpclient`,
:mod:`dyncast_bgp.agent.execute`); they raise
:class:`~dyncast_bgp.agent.iobase.FetchError` with a message that does not name the
source, and the collectors add that context.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shlex
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, assert_never

from dyncast_bgp.agent.execute import run_command
from dyncast_bgp.agent.httpclient import http_get, redact_url
from dyncast_bgp.agent.iobase import MAX_BODY, FetchError
from dyncast_bgp.config.schema import (
    METRIC_NAMES,
    CgroupSource,
    CommandSource,
    FileSource,
    HttpSource,
    MetricSource,
    ProcSource,
)
from dyncast_bgp.wire.community import BY_NAME, ValueFormat

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

FIRST_SAMPLE = 0.1
"""Seconds between the two reads of a procfs/cgroup collector's first CPU sample."""
UINT32_MAX = 0xFFFF_FFFF
_SLACK = 1e-3
"""Relative tolerance above a metric's maximum (and below 0) that is clamped, not rejected."""


class SourceError(Exception):
    """A metric source failed; ``str()`` is ``"<source>: <problem>"``."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


class ContentError(Exception):
    """What a source returned (JSON, lines, a value, a kernel file) is unusable; the message names the
    field or file. Collectors turn it into :class:`SourceError`."""


class Collector(Protocol):
    """Reads the current metrics of one instance from one source."""

    description: str

    async def collect(self) -> dict[str, float]:
        """Metric name -> finite value; raises :class:`SourceError` on any failure.

        Not called concurrently on one collector (rate collectors keep the previous sample).
        """
        ...


def build_collector(source: MetricSource, *, clock: Clock = time.monotonic,
                    sleep: Sleep = asyncio.sleep) -> Collector:
    """The collector for one configured source.

    ``clock`` (seconds, monotonic) and ``sleep`` are injected so tests can drive
    the CPU-rate collectors with fake time; nothing is read until ``collect``.
    """
    if isinstance(source, ProcSource):
        return ProcCollector(source, sleep=sleep)
    if isinstance(source, CgroupSource):
        return CgroupCollector(source, clock=clock, sleep=sleep)
    if isinstance(source, HttpSource):
        return HttpCollector(source)
    if isinstance(source, CommandSource):
        return CommandCollector(source)
    if isinstance(source, FileSource):
        return FileCollector(source)
    assert_never(source)


# ---------------------------------------------------------------- values


def check_metric(name: str, value: object) -> float:
    """``value`` as a float valid for metric ``name``, or :class:`ContentError` naming the field.

    Accepts ints and floats (not bools, not strings). Rejects NaN, infinities,
    negative values and values above the registry maximum (100 for percentages,
    10 for scores) or above the uint32 range of count metrics; values within a
    relative 0.1 % of a bound are float error and are clamped to it.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ContentError(f"{name}: not a number: {value!r}")
    try:
        number = float(value)
    except OverflowError:
        raise ContentError(f"{name}: out of range: {value!r}") from None
    if not math.isfinite(number):
        raise ContentError(f"{name}: not finite: {number!r}")
    spec = BY_NAME[name]
    slack = _SLACK * (spec.maximum or 1.0)
    maximum = spec.maximum
    if maximum is None and spec.fmt is ValueFormat.UINT32:
        maximum = float(UINT32_MAX)
    if number < spec.minimum - slack:
        raise ContentError(f"{name}: {number:g} is below the minimum {spec.minimum:g}")
    if maximum is not None and number > maximum + slack:
        raise ContentError(f"{name}: {number:g} exceeds the maximum {maximum:g}")
    return min(max(number, spec.minimum), maximum) if maximum is not None else max(number, spec.minimum)


def _lookup(document: object, path: str) -> object:
    """The value at dotted ``path`` ("stats.sessions.active"); digits index into lists."""
    current = document
    for part in path.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            raise ContentError(f"missing field {path!r}")
    return current


def select_metrics(document: Mapping[str, object], fields: Mapping[str, str]) -> dict[str, float]:
    """Pick and check metrics from a parsed JSON object or ``name=value`` mapping.

    With ``fields`` (metric name -> dotted path) exactly those metrics are taken
    and each path must exist. Without, every top-level key that is a known
    metric name is taken and other keys are ignored; finding none is an error
    (it is almost always a misconfigured source).
    """
    if fields:
        return {name: _checked_field(name, path, document) for name, path in fields.items()}
    found = {name: check_metric(name, value) for name, value in document.items() if name in METRIC_NAMES}
    if not found:
        keys = ", ".join(sorted(document)[:10]) or "none"
        raise ContentError(f"no known metric names at the top level (keys: {keys})")
    return found


def _checked_field(name: str, path: str, document: Mapping[str, object]) -> float:
    value = _lookup(document, path)
    try:
        return check_metric(name, value)
    except ContentError as exc:
        raise ContentError(f"{exc} (field {path!r})") from None


def parse_document(data: bytes) -> dict[str, object]:
    """Parse a JSON object, or ``name=value`` lines when the text does not start with ``{``.

    Lines: blank lines and ``#`` comments are skipped, whitespace around name
    and value is ignored, values are parsed as floats (checked later), a
    repeated name is an error.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContentError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        return _parse_json_object(stripped)
    return _parse_lines(text)


def _parse_json_object(text: str) -> dict[str, object]:
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ContentError(f"invalid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ContentError(f"expected a JSON object, got {type(document).__name__}")
    return document


def _parse_lines(text: str) -> dict[str, object]:
    values: dict[str, object] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ContentError(f"line {number}: expected name=value, got {line[:80]!r}")
        if name in values:
            raise ContentError(f"line {number}: {name!r} given twice")
        try:
            values[name] = float(value.strip())
        except ValueError:
            raise ContentError(f"line {number}: {name}: not a number: {value.strip()[:80]!r}") from None
    if not values:
        raise ContentError("empty output (expected a JSON object or name=value lines)")
    return values


# ---------------------------------------------------------------- procfs


@dataclass(frozen=True, slots=True)
class CpuTicks:
    """Cumulative CPU time in USER_HZ ticks from the ``cpu`` line of /proc/stat."""

    busy: int
    total: int


def parse_proc_stat(text: str) -> CpuTicks:
    """Busy and total ticks of all CPUs.

    Idle is ``idle + iowait``; total is the first eight columns (user nice
    system idle iowait irq softirq steal): guest time is already in user/nice.
    """
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            try:
                ticks = [int(part) for part in parts[1:9]]
            except ValueError:
                raise ContentError(f"stat: malformed cpu line {line[:120]!r}") from None
            if len(ticks) < 5:
                raise ContentError(f"stat: cpu line has {len(ticks)} columns, need at least 5")
            total = sum(ticks)
            return CpuTicks(busy=total - ticks[3] - ticks[4], total=total)
    raise ContentError("stat: no aggregate 'cpu' line")


def parse_meminfo(text: str) -> dict[str, int]:
    """``/proc/meminfo`` as field name -> kB (fields without a number are skipped)."""
    fields: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        words = rest.split()
        if sep and words and words[0].isdigit():
            fields[name.strip()] = int(words[0])
    return fields


def memory_utilization(meminfo: Mapping[str, int]) -> float:
    """Percent of memory in use: ``100 * (1 - MemAvailable / MemTotal)``."""
    for name in ("MemTotal", "MemAvailable"):
        if name not in meminfo:
            raise ContentError(f"meminfo: no {name} field")
    total, available = meminfo["MemTotal"], meminfo["MemAvailable"]
    if total <= 0:
        raise ContentError(f"meminfo: MemTotal is {total}")
    return check_metric("memory_utilization", 100.0 * (1.0 - available / total))


def cpu_between(before: CpuTicks, after: CpuTicks) -> float | None:
    """Percent busy between two samples; None when no tick elapsed or the counters went backwards."""
    total = after.total - before.total
    busy = after.busy - before.busy
    if total <= 0 or busy < 0:
        return None
    return check_metric("cpu_utilization", min(100.0, 100.0 * busy / total))


def _read_text(path: Path) -> str:
    """Read a small kernel file; any OS error becomes :class:`ContentError` naming the file."""
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise ContentError(f"cannot read {path}: {exc.strerror or exc}") from None


class ProcCollector:
    """Host ``cpu_utilization`` and ``memory_utilization`` from procfs.

    CPU is the busy share of all CPUs' ticks since the previous collect (the
    first collect samples internally, see the module docstring). When no tick
    has elapsed since the previous collect, or the counters went backwards,
    the collect samples internally again.
    """

    def __init__(self, source: ProcSource, *, sleep: Sleep = asyncio.sleep) -> None:
        self.description = f"procfs {source.proc_root}"
        self._root = Path(source.proc_root)
        self._sample = min(FIRST_SAMPLE, source.timeout / 2)
        self._sleep = sleep
        self._last: CpuTicks | None = None

    async def collect(self) -> dict[str, float]:
        """Read /proc/stat and /proc/meminfo; raises :class:`SourceError`."""
        try:
            cpu = await self._cpu()
            memory = memory_utilization(parse_meminfo(_read_text(self._root / "meminfo")))
        except ContentError as exc:
            raise SourceError(self.description, str(exc)) from None
        return {"cpu_utilization": cpu, "memory_utilization": memory}

    def _ticks(self) -> CpuTicks:
        return parse_proc_stat(_read_text(self._root / "stat"))

    async def _cpu(self) -> float:
        now = self._ticks()
        previous, self._last = self._last, now
        if previous is not None:
            value = cpu_between(previous, now)
            if value is not None:
                return value
        await self._sleep(self._sample)
        later = self._ticks()
        self._last = later
        value = cpu_between(now, later)
        if value is None:
            raise ContentError(f"stat: CPU counters did not advance in {self._sample:g}s")
        return value


# ---------------------------------------------------------------- cgroup v2


def parse_cpu_stat_usage(text: str) -> int:
    """``usage_usec`` from a cgroup v2 ``cpu.stat``."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "usage_usec" and parts[1].isdigit():
            return int(parts[1])
    raise ContentError("cpu.stat: no usage_usec line")


def parse_cpu_max(text: str, cpus: int) -> float:
    """CPUs this cgroup may use: quota/period from ``cpu.max``, or ``cpus`` when ``max``."""
    parts = text.split()
    if len(parts) not in (1, 2):
        raise ContentError(f"cpu.max: malformed {text.strip()[:80]!r}")
    if parts[0] == "max":
        return float(cpus)
    try:
        quota = int(parts[0])
        period = int(parts[1]) if len(parts) == 2 else 100_000
    except ValueError:
        raise ContentError(f"cpu.max: malformed {text.strip()[:80]!r}") from None
    if quota <= 0 or period <= 0:
        raise ContentError(f"cpu.max: quota and period must be positive, got {text.strip()!r}")
    return min(quota / period, float(cpus))


def count_cpus(cpuset: str) -> int:
    """Number of CPUs in a cpuset list such as ``0-3,6,8-9`` (0 for an empty list)."""
    count = 0
    for item in cpuset.strip().split(","):
        if not item:
            continue
        first, dash, last = item.partition("-")
        try:
            low = int(first)
            high = int(last) if dash else low
        except ValueError:
            raise ContentError(f"cpuset.cpus.effective: malformed {cpuset.strip()[:80]!r}") from None
        if high < low:
            raise ContentError(f"cpuset.cpus.effective: malformed range {item!r}")
        count += high - low + 1
    return count


@dataclass(frozen=True, slots=True)
class _CgroupSample:
    usage_usec: int
    at: float


class CgroupCollector:
    """``cpu_utilization`` and ``memory_utilization`` of one cgroup v2.

    CPU: ``usage_usec`` delta over wall time, divided by the cgroup's CPU
    allowance (``cpu.max`` quota/period; when ``max`` or absent, the CPUs in
    ``cpuset.cpus.effective`` or else ``os.cpu_count()``), as a percent clamped
    to 100 (bursts and sampling skew can exceed the quota briefly). Limits set
    on ancestor cgroups are not considered.

    Memory: ``memory.current / memory.max``; when ``memory.max`` is ``max`` the
    host ``MemTotal`` (from ``proc_root``/meminfo) is the limit. When the
    cgroup has no ``memory.current`` (memory controller not enabled for it, or
    the root cgroup) memory is not reported. ``cpu.stat`` is required. As for
    procfs, the first collect (and one after usage went backwards, e.g. the
    cgroup was recreated) samples internally.
    """

    def __init__(self, source: CgroupSource, *, clock: Clock = time.monotonic,
                 sleep: Sleep = asyncio.sleep, proc_root: str = "/proc",
                 cpu_count: Callable[[], int | None] = os.cpu_count) -> None:
        self.description = f"cgroup {source.path}"
        self._dir = Path(source.path)
        self._proc = Path(proc_root)
        self._clock = clock
        self._sleep = sleep
        self._cpu_count = cpu_count
        self._sample = min(FIRST_SAMPLE, source.timeout / 2)
        self._last: _CgroupSample | None = None

    async def collect(self) -> dict[str, float]:
        """Read the cgroup's cpu and memory files; raises :class:`SourceError`."""
        try:
            metrics = {"cpu_utilization": await self._cpu()}
            memory = self._memory()
        except ContentError as exc:
            raise SourceError(self.description, str(exc)) from None
        if memory is not None:
            metrics["memory_utilization"] = memory
        return metrics

    def _read(self, name: str) -> str:
        return _read_text(self._dir / name)

    def _usage(self) -> _CgroupSample:
        return _CgroupSample(parse_cpu_stat_usage(self._read("cpu.stat")), self._clock())

    def _allowance(self) -> float:
        has = self._has
        cpus = count_cpus(self._read("cpuset.cpus.effective")) if has("cpuset.cpus.effective") else None
        cpus = cpus or self._cpu_count() or 1
        return parse_cpu_max(self._read("cpu.max"), cpus) if has("cpu.max") else float(cpus)

    def _has(self, name: str) -> bool:
        return (self._dir / name).exists()

    def _between(self, before: _CgroupSample, after: _CgroupSample) -> float | None:
        used = after.usage_usec - before.usage_usec
        elapsed = after.at - before.at
        if used < 0 or elapsed <= 0:
            return None
        share = used / (elapsed * 1e6 * self._allowance())
        return check_metric("cpu_utilization", min(100.0, 100.0 * share))

    async def _cpu(self) -> float:
        now = self._usage()
        previous, self._last = self._last, now
        if previous is not None:
            value = self._between(previous, now)
            if value is not None:
                return value
        await self._sleep(self._sample)
        later = self._usage()
        self._last = later
        value = self._between(now, later)
        if value is None:
            raise ContentError(f"cpu.stat: usage_usec went backwards or no time passed in {self._sample:g}s")
        return value

    def _memory(self) -> float | None:
        if not self._has("memory.current"):
            return None
        current = _parse_bytes("memory.current", self._read("memory.current"))
        limit_text = self._read("memory.max").strip() if self._has("memory.max") else "max"
        if limit_text == "max":
            meminfo = parse_meminfo(_read_text(self._proc / "meminfo"))
            if meminfo.get("MemTotal", 0) <= 0:
                raise ContentError("meminfo: no usable MemTotal for a cgroup without memory.max")
            limit = meminfo["MemTotal"] * 1024
        else:
            limit = _parse_bytes("memory.max", limit_text)
        if limit <= 0:
            raise ContentError(f"memory.max is {limit}")
        return check_metric("memory_utilization", min(100.0, 100.0 * current / limit))


def _parse_bytes(name: str, text: str) -> int:
    value = text.strip()
    if not value.isdigit():
        raise ContentError(f"{name}: not a byte count: {value[:80]!r}")
    return int(value)


# ---------------------------------------------------------------- http, command, file


class HttpCollector:
    """GET a JSON object from the instance; see :func:`http_get` and :func:`select_metrics`.

    Any status other than 2xx is an error (redirects are not followed).
    """

    def __init__(self, source: HttpSource, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.description = f"http {redact_url(source.url)}"
        self._url = source.url
        self._timeout = source.timeout
        self._fields = dict(source.fields)
        self._ssl = ssl_context

    async def collect(self) -> dict[str, float]:
        """Fetch and parse the document; raises :class:`SourceError`."""
        try:
            response = await http_get(self._url, timeout=self._timeout, ssl_context=self._ssl)
        except FetchError as exc:
            raise SourceError(self.description, str(exc)) from None
        if not 200 <= response.status < 300:
            raise SourceError(self.description, f"HTTP {response.status} {response.reason}".rstrip())
        try:
            return select_metrics(_parse_json_object(_decode(response.body)), self._fields)
        except ContentError as exc:
            raise SourceError(self.description, str(exc)) from None


def _decode(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContentError(f"body is not UTF-8 ({exc.reason} at byte {exc.start})") from None


class CommandCollector:
    """Run a command (argv, no shell) and parse its stdout (JSON object or ``name=value`` lines).

    A non-zero exit is an error quoting the start of stderr; a command still
    running at the timeout is killed with its whole process group.
    """

    def __init__(self, source: CommandSource) -> None:
        self.description = f"command {shlex.join(source.argv)}"
        self._argv = source.argv
        self._timeout = source.timeout
        self._fields = dict(source.fields)

    async def collect(self) -> dict[str, float]:
        """Run the command once; raises :class:`SourceError`."""
        try:
            result = await run_command(self._argv, timeout=self._timeout)
        except FetchError as exc:
            raise SourceError(self.description, str(exc)) from None
        if result.returncode != 0:
            raise SourceError(self.description, result.failure())
        if result.truncated:
            raise SourceError(self.description, f"stdout exceeds {MAX_BODY} bytes")
        try:
            return select_metrics(parse_document(result.stdout), self._fields)
        except ContentError as exc:
            raise SourceError(self.description, str(exc)) from None


class FileCollector:
    """Re-read a file (JSON object or ``name=value`` lines) on every collect.

    The read runs in a worker thread under the source's timeout, so a file on
    a hung network filesystem cannot block the event loop.
    """

    def __init__(self, source: FileSource) -> None:
        self.description = f"file {source.path}"
        self._path = Path(source.path)
        self._timeout = source.timeout
        self._fields = dict(source.fields)

    async def collect(self) -> dict[str, float]:
        """Read and parse the file; raises :class:`SourceError`."""
        try:
            async with asyncio.timeout(self._timeout):
                data = await asyncio.to_thread(_read_capped_file, self._path)
        except TimeoutError:
            raise SourceError(self.description, f"read timed out after {self._timeout:g}s") from None
        except OSError as exc:
            raise SourceError(self.description, f"cannot read: {exc.strerror or exc}") from None
        try:
            if len(data) > MAX_BODY:
                raise ContentError(f"larger than {MAX_BODY} bytes")
            return select_metrics(parse_document(data), self._fields)
        except ContentError as exc:
            raise SourceError(self.description, str(exc)) from None


def _read_capped_file(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(MAX_BODY + 1)
