"""Load a config file and report every problem with its location.

``load(path)`` returns a :class:`Config` or raises :class:`ConfigError` holding
all problems, each as ``file:line: services[2].health.interval: must be > 0``.
Parsing is pure given the text (``parse(text, origin)``); only ``load`` reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from dyncast_bgp.config.rules import check_rules
from dyncast_bgp.config.schema import Config


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    message: str
    line: int | None = None

    def render(self, origin: str) -> str:
        where = f"{origin}:{self.line}" if self.line else origin
        return f"{where}: {self.path or '<top>'}: {self.message}"


class ConfigError(Exception):
    def __init__(self, origin: str, problems: list[Problem]) -> None:
        self.origin = origin
        self.problems = problems
        super().__init__("\n".join(p.render(origin) for p in problems))


def load(path: str | Path) -> Config:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(file), [Problem("", f"cannot read: {exc}")]) from None
    return parse(text, str(file))


def parse(text: str, origin: str = "<config>") -> Config:
    try:
        root_node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(origin, [_yaml_problem(exc, text)]) from None
    except RecursionError:  # PyYAML composes recursively: brackets nested a thousand deep
        raise ConfigError(origin, [Problem("", "invalid YAML: nested too deeply", 1)]) from None
    except (ValueError, TypeError, OverflowError):  # a scalar its explicit tag cannot hold: `!!int x`
        raise ConfigError(origin, [_unconstructible(text)]) from None  # not the value: it may be a secret
    shape = _alias_problem(root_node)
    if shape is not None:
        raise ConfigError(origin, [shape])
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(origin, [Problem("", f"the file must hold a mapping, not {type(data).__name__}",
                                           line_of(root_node, ()))])
    duplicates = _duplicate_keys(root_node)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        deeper = {tuple(error["loc"][:-1]) for error in errors if error["loc"]}
        problems = [problem_of(error, data, root_node) for error in errors
                    if not (error["type"] == "too_short" and tuple(error["loc"]) in loc_prefixes(deeper))]
        raise ConfigError(origin, duplicates + unique_problems(problems)) from None
    if duplicates:
        raise ConfigError(origin, duplicates)
    rule_problems = [Problem(path, message, line_of(root_node, _split(path))) for path, message in
                     check_rules(config)]
    if rule_problems:
        raise ConfigError(origin, rule_problems)
    return config


def _yaml_problem(exc: yaml.YAMLError, text: str) -> Problem:
    """Where and what: a scanner/parser error has a mark; a reader error (a control character) a position."""
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        return Problem("", f"invalid YAML: unacceptable character #x{exc.character:04x}: {exc.reason}"
                       if isinstance(exc.character, int) else f"invalid YAML: {exc.reason}", line)
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return Problem("", f"invalid YAML: {reason}", mark.line + 1 if mark is not None else 1)


def _unconstructible(text: str) -> Problem:
    """The first scalar PyYAML composes but cannot construct (``!!float abc``), named by line and tag."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    stack: list[yaml.Node] = [root] if root is not None else []
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            try:
                yaml.constructor.SafeConstructor().construct_object(node, deep=True)
            except (ValueError, TypeError, OverflowError, yaml.YAMLError):
                tag = str(node.tag).replace("tag:yaml.org,2002:", "!!")
                return Problem("", f"invalid YAML: the value cannot be read as {tag}", node.start_mark.line + 1)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(reversed(node.value))
        elif isinstance(node, yaml.MappingNode):
            stack.extend(item for pair in reversed(node.value) for item in reversed(pair))
    return Problem("", "invalid YAML: a value cannot be read as its tag says", 1)


MAX_NODES = 100_000
"""Nodes a config may hold once its aliases are expanded: far above any real config, far below an alias bomb."""


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return []


def _alias_problem(root: yaml.Node | None) -> Problem | None:
    """An alias inside its own anchor (a recursive structure) or aliases expanding past :data:`MAX_NODES`.

    Sizes are counted per distinct node (memoised), so the check costs the size of the text, not of the
    expansion; the walk is iterative (no recursion limit to hit).
    """
    if root is None:
        return None
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[key] > MAX_NODES:
                return Problem("", f"YAML aliases expand to more than {MAX_NODES} values (an alias bomb?)",
                               node.start_mark.line + 1)
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            return Problem("", "a YAML alias refers to its own anchor (a recursive structure)",
                           node.start_mark.line + 1)
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in reversed(_children(node)) if id(child) not in sizes)
    return None


def _duplicate_keys(root: yaml.Node | None) -> list[Problem]:
    """A key given twice in one mapping (YAML forbids it; PyYAML would keep the last silently).

    Each node is looked at once, however many aliases lead to it.
    """
    problems: list[Problem] = []
    stack: list[tuple[yaml.Node, tuple[Any, ...]]] = [(root, ())] if root is not None else []
    seen: set[int] = set()
    while stack:
        node, loc = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, (*loc, index)) for index, child in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else None
                if name is not None and name in first:
                    problems.append(Problem(format_loc((*loc, name)),
                                            f"given twice (first on line {first[name]}); YAML keys must be unique",
                                            key.start_mark.line + 1))
                elif name is not None:
                    first[name] = key.start_mark.line + 1
                stack.append((value, (*loc, name if name is not None else "?")))
    return sorted(problems, key=lambda problem: problem.line or 0)


def problem_of(error: Any, data: Any, root: yaml.Node | None) -> Problem:
    loc = _strip_tags(tuple(error["loc"]), data)
    return Problem(format_loc(loc), error_message(error), line_of(root, loc))


def loc_prefixes(locs: set[tuple[Any, ...]]) -> set[tuple[Any, ...]]:
    return {loc[:n] for loc in locs for n in range(1, len(loc) + 1)}


def _strip_tags(loc: tuple[Any, ...], data: Any) -> tuple[Any, ...]:
    """Drop the discriminator tags pydantic puts into locations of tagged unions."""
    kept: list[Any] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part not in node and node.get("type") == part:
            continue
        if isinstance(part, str) and part.startswith("function-"):
            continue
        kept.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
    return tuple(kept)


def format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _split(path: str) -> tuple[Any, ...]:
    parts: list[Any] = []
    for chunk in path.replace("[", ".[").split("."):
        if not chunk:
            continue
        parts.append(int(chunk[1:-1]) if chunk.startswith("[") else chunk)
    return tuple(parts)


_OPERATORS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="),
              "less_than": ("lt", "<"), "less_than_equal": ("le", "<=")}


def error_message(error: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind in _OPERATORS:
        key, symbol = _OPERATORS[kind]
        bound = ctx.get(key)
        return f"must be {symbol} {bound:g}" if isinstance(bound, float) else f"must be {symbol} {bound}"
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "unknown field (not in the schema)"
    if kind == "union_tag_invalid":
        return f"unknown type {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return f"needs a '{ctx.get('discriminator', 'type').strip(chr(39))}' field"
    message: str = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix):]
    return message[0].lower() + message[1:] if message else message


def line_of(root: yaml.Node | None, loc: tuple[Any, ...]) -> int:
    """The 1-based line of the deepest YAML node found along ``loc``."""
    node = root
    line = node.start_mark.line + 1 if node is not None else 1  # an empty file: line 1
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    child = value
                    line = key.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


def unique_problems(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[str, str]] = set()
    out = []
    for problem in problems:
        if (problem.path, problem.message) not in seen:
            seen.add((problem.path, problem.message))
            out.append(problem)
    return out
