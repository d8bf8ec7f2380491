"""The control protocol: newline-delimited JSON over a local unix stream socket. Pure, no I/O.

A request is one line holding one JSON object: ``{"verb": "drain", "instance": "web/a"}``.
The answer is one line: ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``;
answers come in the order of the requests. A server describes what it accepts
with a table of :class:`Verb` specs; :func:`parse_request` checks a line against
it and returns a :class:`Request` or a :class:`RequestError` saying what is wrong
and where. It never raises, whatever the bytes. :class:`LineFramer` cuts a byte
stream into lines and turns a line over :data:`MAX_LINE` bytes into one error
instead of buffering it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_LINE = 64 * 1024  # bytes in one request line, newline excluded
MAX_STRING = 256  # characters in one string field
Response = dict[str, Any]


@dataclass(frozen=True, slots=True)
class FieldSpec:
    kind: type[str] | type[int] | type[bool]
    required: bool = True
    help: str = ""


@dataclass(frozen=True, slots=True)
class Verb:
    name: str
    help: str
    fields: Mapping[str, FieldSpec] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Request:
    verb: str
    args: Mapping[str, str | int | bool] = field(default_factory=dict)

    def text(self, name: str) -> str | None:
        value = self.args.get(name)
        return value if isinstance(value, str) else None

    def to_json(self) -> str:
        return json.dumps({"verb": self.verb, **self.args}, separators=(",", ":")) + "\n"


@dataclass(frozen=True, slots=True)
class RequestError:
    message: str

    def response(self) -> Response:
        return error(self.message)


@dataclass(frozen=True, slots=True)
class Overlong:
    """A line that went past MAX_LINE (its bytes were dropped up to its newline)."""

    length: int


def error(message: str) -> Response:
    return {"ok": False, "error": message}


def encode(response: Response) -> bytes:
    """One answer line (ASCII JSON, so no byte of it can be a newline)."""
    return (json.dumps(response, separators=(",", ":"), allow_nan=False) + "\n").encode()


_KIND_NAMES = {str: "a string", int: "an integer", bool: "true or false"}


def _type_name(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _matches(value: object, kind: type) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


class _DuplicateFieldError(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateFieldError(key)
        result[key] = value
    return result


def parse_request(line: bytes, verbs: Mapping[str, Verb]) -> Request | RequestError:
    """Check one request line (without its newline) against ``verbs``."""
    if len(line) > MAX_LINE:
        return RequestError(f"request: line is {len(line)} bytes, longer than the limit of {MAX_LINE}")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return RequestError(f"request: not UTF-8 at byte {exc.start}")
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateFieldError as exc:
        return RequestError(f"request: field {str(exc)!r} given twice")
    except json.JSONDecodeError as exc:
        return RequestError(f"request: invalid JSON at column {exc.colno}: {exc.msg}")
    except (ValueError, RecursionError) as exc:  # e.g. an integer of 5,000 digits, or arrays nested 50,000 deep
        return RequestError(f"request: unreadable JSON: {type(exc).__name__}: {str(exc)[:120]}")
    if not isinstance(data, dict):
        return RequestError(f"request: must be a JSON object, not {_type_name(data)}")
    return check_request(data, verbs)


def check_request(data: Mapping[str, Any], verbs: Mapping[str, Verb]) -> Request | RequestError:
    """Check a decoded request object against ``verbs``; every problem found is listed."""
    verb_name = data.get("verb")
    if verb_name is None:
        return RequestError(f"request.verb: missing (one of: {', '.join(sorted(verbs))})")
    if not isinstance(verb_name, str):
        return RequestError(f"request.verb: expected a string, got {_type_name(verb_name)}")
    verb = verbs.get(verb_name)
    if verb is None:
        return RequestError(f"request.verb: unknown verb {_short(verb_name)} (one of: {', '.join(sorted(verbs))})")
    problems: list[str] = []
    unknown = sorted(set(data) - set(verb.fields) - {"verb"})
    if unknown:
        allowed = ", ".join(sorted(verb.fields)) or "none"
        problems.append(f"request: unknown field{'s' if len(unknown) > 1 else ''} "
                        f"{', '.join(_short(name) for name in unknown)} for verb {verb.name!r} (allowed: {allowed})")
    args: dict[str, str | int | bool] = {}
    for name, spec in verb.fields.items():
        if name not in data:
            if spec.required:
                problems.append(f"request.{name}: missing (verb {verb.name!r} needs it)")
            continue
        value = data[name]
        if not _matches(value, spec.kind):
            problems.append(f"request.{name}: expected {_KIND_NAMES[spec.kind]}, got {_type_name(value)}")
        elif isinstance(value, str) and not 0 < len(value) <= MAX_STRING:
            problems.append(f"request.{name}: must be 1 to {MAX_STRING} characters, got {len(value)}")
        else:
            args[name] = value
    if problems:
        return RequestError("; ".join(problems))
    return Request(verb.name, args)


def _short(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


class LineFramer:
    """Cuts a byte stream into lines; a line longer than ``limit`` becomes one :class:`Overlong`.

    Memory stays bounded by ``limit``: the bytes of an over-long line are dropped
    as they arrive, up to its newline. Blank lines are skipped.
    """

    def __init__(self, limit: int = MAX_LINE) -> None:
        self.limit = limit
        self._buffer = bytearray()
        self._dropping: int | None = None  # bytes of the over-long line dropped so far

    def feed(self, data: bytes) -> list[bytes | Overlong]:
        out: list[bytes | Overlong] = []
        start = 0
        while start <= len(data):
            newline = data.find(b"\n", start)
            end = len(data) if newline < 0 else newline
            piece = data[start:end]
            if self._dropping is not None:
                self._dropping += len(piece)
            else:
                self._buffer += piece
                if len(self._buffer) > self.limit:
                    self._dropping = len(self._buffer)
                    self._buffer.clear()
            if newline < 0:
                break
            out.extend(self._end_line())
            start = newline + 1
        return out

    def finish(self) -> list[bytes | Overlong]:
        """End of input: a last line without its newline still counts."""
        return self._end_line()

    def _end_line(self) -> list[bytes | Overlong]:
        if self._dropping is not None:
            length, self._dropping = self._dropping, None
            return [Overlong(length)]
        line = bytes(self._buffer).rstrip(b"\r")
        self._buffer.clear()
        return [line] if line.strip() else []


def handle_line(item: bytes | Overlong, verbs: Mapping[str, Verb]) -> Request | RequestError:
    """What a server does with one framed item before dispatching it."""
    if isinstance(item, Overlong):
        return RequestError(f"request: line is {item.length} bytes, longer than the limit of {MAX_LINE}")
    return parse_request(item, verbs)
