"""The `dyncast` entry point: each subcommand loads only its own area."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

from dyncast_bgp.cli import AREAS, COMMANDS


def test_every_subcommand_is_mapped_to_the_area_that_registers_it() -> None:
    """`dyncast X ...` imports only X's area: the map must name exactly the module that registers X."""
    owners: dict[str, str] = {}
    for module_name in AREAS:
        parser = argparse.ArgumentParser()
        subparsers = parser.add_subparsers(dest="command")
        importlib.import_module(module_name).register(subparsers)
        for name in subparsers.choices:
            owners[name] = module_name
    assert owners == COMMANDS


def test_ctl_starts_without_loading_the_config_schema() -> None:
    code = ("import sys; from dyncast_bgp.cli import main; "
            "code = main(['ctl', '--socket', '/nonexistent/dyncast.sock', 'instances']); "
            "print(code, 'dyncast_bgp.config.schema' in sys.modules, 'matplotlib' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["1", "False", "False"], done.stdout + done.stderr
    assert "no control socket" in done.stderr
