"""Variants of labs/intra-site for lab tests: the three files copied with a name, a run directory and edits.

Each edit asserts that what it rewrites is still there, so a change to the lab's files fails the test that
depends on it with a message instead of running an unedited lab.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2] / "labs" / "intra-site"
TOPOLOGY, AGENT, ACCESS = "intra-site.clab.yml", "agent.yml", "access.yml"

Edit = Callable[[str], str]


def intra_site_copy(directory: Path, name: str, run: str | Path, *, topology: Edit | None = None,
                    agent: Edit | None = None, access: Edit | None = None) -> Path:
    """labs/intra-site written to ``directory`` as lab ``name`` with run directory ``run``, each file passed
    through its edit; the topology file's path."""
    for file, edit in ((TOPOLOGY, topology), (AGENT, agent), (ACCESS, access)):
        text = (SOURCE / file).read_text().replace("/run/dyncast-lab/intra-site", str(run))
        if file == TOPOLOGY:
            text = text.replace("name: intra-site", f"name: {name}")
        if edit is not None:
            text = edit(text)
        (directory / file).write_text(text)
    return directory / TOPOLOGY


def vnf_c_version(text: str, version: int) -> str:
    """agent.yml with vnf-c announcing software ``version`` (the other instances keep version 1)."""
    head, marker, tail = text.partition("      - name: vnf-c")
    assert marker and "version: 1" in tail, "labs/intra-site/agent.yml changed: vnf-c block not found"
    return head + marker + tail.replace("version: 1", f"version: {version}", 1)


def router_section(text: str, lines: str) -> str:
    """access.yml with ``lines`` (each indented two spaces, newline-terminated) first in the router section."""
    assert "router:\n" in text, "labs/intra-site/access.yml changed: no router section"
    return text.replace("router:\n", "router:\n" + lines, 1)
