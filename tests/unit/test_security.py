"""Least privilege and safety (issue 8, item 4): commands without a shell and with deadlines, the control
socket's mode, secrets kept out of errors, logs and world-readable files, and the stdin line limit."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dyncast_bgp.agent.execute import run_command
from dyncast_bgp.agent.health import build_checker
from dyncast_bgp.agent.iobase import FetchError
from dyncast_bgp.config.loader import ConfigError, parse
from dyncast_bgp.config.schema import CommandHealth
from dyncast_bgp.ctl.protocol import Request, Response, Verb
from dyncast_bgp.ctl.server import serve_control
from dyncast_bgp.exabgp.run import write_config
from tests.unit.exabgp_lines import update

DYNCAST = Path(sys.executable).with_name("dyncast")
SECRET = "hunter2-Zq9"
BGP = f"""bgp:
  router_id: 192.0.2.1
  local_as: 65001
  neighbors:
    - address: 127.0.0.1
      peer_as: 65001
      md5_password: {SECRET}
"""
AGENT = BGP + """agent: {log_level: debug, publish: {min_interval: 0.05}}
services:
  - name: web
    dsid: 203.0.113.10/32
    instances:
      - {name: a, binding: 198.51.100.11, capacity: 100, health: {type: none}}
"""
ROUTER = BGP + "router: {log_level: debug, startup_hold: 0}\n"


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with contextlib.suppress(OSError):  # a zombie is gone for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    return True


# ------------------------------------------------------------------ commands: no shell, deadlines


def test_command_arguments_reach_the_program_verbatim_no_shell() -> None:
    words = ["$(touch /tmp/dyncast-pwned)", "; id", "| cat", "`id`", "*", "a b"]
    result = asyncio.run(run_command(["/bin/echo", *words], timeout=5))
    assert result.stdout.decode().rstrip("\n") == " ".join(words)
    assert not Path("/tmp/dyncast-pwned").exists()


def test_command_over_its_timeout_is_killed_with_its_whole_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = f"sleep 60 & echo $! > {pids}; echo $$ >> {pids}; sleep 60"
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"timed out after 0.3s \(process group killed\)"):
        asyncio.run(run_command(["/bin/sh", "-c", script], timeout=0.3))
    assert time.monotonic() - started < 0.3 + 1.5
    children = [int(pid) for pid in pids.read_text().split()]
    assert len(children) == 2
    deadline = time.monotonic() + 2
    while not all(_gone(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert all(_gone(pid) for pid in children), f"left running: {children}"


def test_command_health_check_over_its_timeout_is_unhealthy_and_killed(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    checker = build_checker(CommandHealth(type="command", argv=("/bin/sh", "-c", f"echo $$ > {pidfile}; exec sleep 60"),
                                          timeout=0.3))
    started = time.monotonic()
    result = asyncio.run(checker.check())
    assert not result.ok and "timed out" in result.detail
    assert time.monotonic() - started < 0.3 + 1.5
    assert _gone(int(pidfile.read_text()))


# ------------------------------------------------------------------ the control socket's mode


async def _no_handler(request: Request) -> Response:
    return {"ok": True}


@pytest.mark.parametrize("mode", [0o600, 0o660, 0o640])
def test_control_socket_has_the_configured_mode_whatever_the_umask(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "ctl.sock"
    verbs = {"status": Verb("status", "status")}

    async def main() -> None:
        server = await serve_control(path, mode=mode, verbs=verbs, handle=_no_handler)
        try:
            info = os.lstat(path)
            assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == mode
            assert info.st_uid == os.getuid()
            assert [p.name for p in tmp_path.iterdir()] == ["ctl.sock"], "the temporary name is gone"
        finally:
            await server.close()

    old = os.umask(0)  # a permissive umask must not widen the socket
    try:
        asyncio.run(main())
    finally:
        os.umask(old)


def test_agent_config_default_socket_mode_is_group_only() -> None:
    assert parse(AGENT).agent.control_socket_mode == 0o660


# ------------------------------------------------------------------ secrets


@pytest.mark.parametrize("text", [
    AGENT.replace(f"md5_password: {SECRET}", f'md5_password: "{SECRET};"'),  # refused by the pattern
    AGENT.replace(f"md5_password: {SECRET}", f"md5_password: {SECRET * 8}"),  # too long
    AGENT.replace(f"md5_password: {SECRET}", f"md5_password: !!int {SECRET}"),  # YAML cannot construct it
    AGENT.replace(f"md5_password: {SECRET}", f"md5_passwd: {SECRET}"),  # unknown field
    AGENT.replace(f"      md5_password: {SECRET}", f"  md5_password: {SECRET}"),  # misplaced
    AGENT.replace(f"md5_password: {SECRET}", f'md5_password: "{SECRET}'),  # unterminated
    AGENT.replace(f"md5_password: {SECRET}", f"md5_password: [{SECRET}]"),  # wrong type
    AGENT.replace("peer_as: 65001", "peer_as: x"),  # another field wrong, the password fine
    AGENT.replace("local_as: 65001", "local_as: 65001\n  local_as: 65002"),  # duplicate key
])
def test_config_errors_never_show_the_password(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(text, "agent.yml")
    assert SECRET not in str(caught.value)
    assert all(SECRET not in repr(problem) for problem in caught.value.problems)


def test_config_objects_do_not_show_the_password() -> None:
    config = parse(AGENT)
    assert SECRET not in repr(config) and SECRET not in str(config) and SECRET not in repr(config.bgp.neighbors[0])


@pytest.mark.parametrize("broken", [False, True])
def test_config_check_never_prints_the_password(tmp_path: Path, broken: bool) -> None:
    path = tmp_path / "agent.yml"
    path.write_text(AGENT.replace(f"md5_password: {SECRET}", f'md5_password: "{SECRET}\\\\"') if broken else AGENT)
    done = subprocess.run([str(DYNCAST), "config", "check", str(path)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == (2 if broken else 0), done.stderr
    assert SECRET not in done.stdout + done.stderr


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_rendered_exabgp_config_with_a_password_is_owner_only(tmp_path: Path) -> None:
    config_path = tmp_path / "agent.yml"
    config_path.write_text(AGENT)
    workdir = tmp_path / "work"
    workdir.mkdir()
    stale = workdir / "exabgp-agent.conf"
    stale.write_text("old")
    stale.chmod(0o644)  # a file left with looser permissions is replaced, not rewritten in place
    target = write_config(parse(AGENT), role="agent", config_path=config_path, workdir=workdir)
    assert target == stale and _mode(target) == 0o600 and SECRET in target.read_text()
    assert sorted(p.name for p in workdir.iterdir()) == ["exabgp-agent.conf"]


def test_rendered_exabgp_config_without_a_password_keeps_the_usual_mode(tmp_path: Path) -> None:
    text = AGENT.replace(f"      md5_password: {SECRET}\n", "")
    config_path = tmp_path / "agent.yml"
    config_path.write_text(text)
    old = os.umask(0o022)
    try:
        target = write_config(parse(text), role="agent", config_path=config_path, workdir=tmp_path / "w")
    finally:
        os.umask(old)
    assert _mode(target) == 0o644


@pytest.mark.parametrize(("with_password", "mode"), [(True, 0o600), (False, 0o644)])
def test_exabgp_conf_output_file_mode(tmp_path: Path, with_password: bool, mode: int) -> None:
    config_path = tmp_path / "router.yml"
    config_path.write_text(ROUTER if with_password else ROUTER.replace(f"      md5_password: {SECRET}\n", ""))
    out = tmp_path / "exabgp.conf"
    out.write_text("")
    out.chmod(0o666)
    argv = [str(DYNCAST), "exabgp-conf", "--role", "router", "--config", str(config_path), "-o", str(out)]
    old = os.umask(0o022)  # inherited by the child
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    finally:
        os.umask(old)
    assert done.returncode == 0, done.stderr
    assert _mode(out) == mode and (SECRET in out.read_text()) == with_password
    assert SECRET not in done.stdout + done.stderr


@contextlib.contextmanager
def _process(*argv: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_agent_debug_logs_never_show_the_password(tmp_path: Path) -> None:
    config_path = tmp_path / "agent.yml"
    config_path.write_text(AGENT)
    with _process(str(DYNCAST), "agent", "--config", str(config_path), "--log-level", "debug") as proc:
        assert proc.stdout is not None and proc.stdin is not None
        first = proc.stdout.readline()  # the announcement: the agent is up and has logged its start
        assert first.startswith(b"announce"), first
        proc.stdin.write(b"done\nerror\n")
        proc.stdin.flush()
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert b"agent_started" in err and SECRET.encode() not in err + first + out


def test_router_debug_logs_never_show_the_password(tmp_path: Path) -> None:
    config_path = tmp_path / "router.yml"
    config_path.write_text(ROUTER)
    feed = "\n".join([update(1.0, "127.0.0.1", "203.0.113.10/32", "198.51.100.11", 1, metrics={"cpu_utilization": 5}),
                      "{not json", ""])
    with _process(str(DYNCAST), "router", "--config", str(config_path), "--no-dataplane", "--no-probes") as proc:
        out, err = proc.communicate(feed.encode(), timeout=30)
    assert b"router_started" in err and b"decision_changed" in err
    assert SECRET.encode() not in err + out


# ------------------------------------------------------------------ stdin: a line over the limit


def test_router_skips_a_line_over_the_stdin_limit_and_keeps_reading(tmp_path: Path) -> None:
    """Regression (fuzzing): asyncio's readline raised ValueError on a line over 1 MiB and the router stopped."""
    config_path = tmp_path / "router.yml"
    config_path.write_text(ROUTER)
    long_line = b'{"exabgp": "5.0.0", "x": "' + b"a" * (2 << 20) + b'"}\n'
    good = update(1.0, "127.0.0.1", "203.0.113.10/32", "198.51.100.11", 1, metrics={"cpu_utilization": 5})
    argv = [str(DYNCAST), "router", "--config", str(config_path), "--no-dataplane", "--no-probes"]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert proc.stdin is not None and proc.stderr is not None
        stdin = proc.stdin

        def write() -> None:  # in a thread: the router reads while this writes more than a pipe holds
            with contextlib.suppress(BrokenPipeError):
                stdin.write(long_line + good.encode() + b"\n")
                stdin.close()

        writer = threading.Thread(target=write)
        writer.start()
        err = proc.stderr.read()  # until the router exits: at the end of its input, not before
        writer.join(timeout=30)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert b"exabgp_line_rejected" in err and b"line over 1048576 bytes" in err
    assert b"decision_changed" in err, "the line after the long one was read"
    assert b'"lines": 3' in err
