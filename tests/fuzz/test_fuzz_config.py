"""Fuzz the config loader: YAML-ish text in, a Config or a ConfigError out, every problem with file:line.

Inputs are the example configs with their trees mutated (wrong types in every
field, huge numbers, NaN, unicode, deep nesting) and dumped back, their text
damaged (truncated, tabs, bad indentation), and YAML's own traps (aliases,
tags, several documents, control characters).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz import strategies as fz
from tests.fuzz.targets import config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TEXTS = [path.read_text(encoding="utf-8") for path in sorted(EXAMPLES.glob("*.yml"))]
TREES = [yaml.safe_load(text) for text in TEXTS]
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

YAML_TRAPS = [
    "a: &a [1, 2]\nb: *a\n", "bgp: *nowhere\n", "bgp: !!python/object:os.system {}\n", "bgp: !!binary aGVsbG8=\n",
    "---\nbgp: {}\n---\nbgp: {}\n", "bgp: {router_id: 192.0.2.1, local_as: 65001}\n\x00\n", "\ufeffbgp: {}\n",
    "bgp:\n\trouter_id: 1\n", "bgp: {router_id: 192.0.2.1, local_as: .nan}\n", "bgp: {local_as: 0o777}\n",
    "services: 2001-01-01\n", "bgp: {local_as: 1_000_000_000_000_000_000_000}\n", "? [a, b]\n: c\n",
    "bgp: {router_id: 192.0.2.1, router_id: 192.0.2.2, local_as: 1}\n", "<<: {bgp: 1}\n", "'unterminated\n",
    "[" * 600 + "]" * 600 + "\n", "a:\n" + "".join(" " * i + "- \n" for i in range(0, 400, 2)),
    "bgp: {md5_password: \"\\x00\"}\n", "- just\n- a list\n", "42\n", "\u2028bgp: {}\n", "bgp: {neighbors: [{}]}\n",
]


@SETTINGS
@given(st.sampled_from(TREES).flatmap(fz.mutated_trees), st.booleans())
def test_mutated_example_trees(tree: object, flow: bool) -> None:
    try:
        text = yaml.safe_dump(tree, default_flow_style=flow, allow_unicode=True)
    except (yaml.YAMLError, ValueError, RecursionError):  # e.g. a lone surrogate, not representable
        return
    config(text.encode("utf-8", errors="surrogatepass"))


@SETTINGS
@given(st.sampled_from(TEXTS).flatmap(fz.text_damage))
def test_damaged_example_text(text: str) -> None:
    config(text.encode("utf-8", errors="surrogatepass"))


@SETTINGS
@given(st.sampled_from(TEXTS), st.integers(0, 5000), st.sampled_from(
    ["\t", "  ", "- ", ": ", "{", "[", "&x ", "*x", "!!str ", "!!int ", "%YAML 1.1\n", "\x00", "\x85", "é", "#"]))
def test_yaml_syntax_damage(text: str, at: int, insert: str) -> None:
    position = at % (len(text) + 1)
    config((text[:position] + insert + text[position:]).encode("utf-8", errors="surrogatepass"))


@settings(max_examples=len(YAML_TRAPS), deadline=None)
@given(st.sampled_from(YAML_TRAPS))
def test_yaml_traps(text: str) -> None:
    config(text.encode())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes) -> None:
    config(data)
