"""`dyncast exabgp-run`: render ExaBGP's configuration for a role and run ExaBGP on it.

One YAML file per node is then all a lab (or a container) needs: the ExaBGP
text is derived from it each start, so the two can never disagree, and the
dyncast process ExaBGP runs gets the same absolute config path. ExaBGP is
exec'd (it replaces this process), so a supervisor's signals reach it
directly. Its environment gets what DESIGN.md section 5 found necessary
(``exabgp_daemon_user=root``, ``exabgp_api_cli=false``); ``exabgp_*``
variables already set by the caller win.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from dyncast_bgp.config.schema import Config
from dyncast_bgp.exabgp.render import Role, render

DEFAULT_ENV = {
    "exabgp_daemon_user": "root",
    "exabgp_api_cli": "false",
    "exabgp_tcp_bind": "",  # active sessions only: the peers are configured, never accepted
    "exabgp_log_short": "true",
}


def exabgp_environment(base: Mapping[str, str]) -> dict[str, str]:
    """``base`` plus the ExaBGP settings it does not set itself."""
    env = dict(base)
    for key, value in DEFAULT_ENV.items():
        env.setdefault(key, value)
    return env


def executable(name: str) -> str:
    """``name`` from this interpreter's bin directory (the venv), else from PATH; an error if neither."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name}: not found beside {sys.executable} nor on PATH")
    return found


def default_workdir(config_path: Path, role: str) -> Path:
    """A per-config directory under the temp dir: two nodes never share one, a restart reuses it."""
    digest = hashlib.sha256(str(config_path.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"dyncast-exabgp-{role}-{digest}"


def write_config(config: Config, *, role: Role, config_path: Path, workdir: Path) -> Path:
    """Render ExaBGP's text for ``role`` into ``workdir`` and return its path (mode 0600 with a password)."""
    workdir.mkdir(parents=True, exist_ok=True)
    text = render(config, role=role, command=[executable("dyncast")], config_path=str(config_path.resolve()))
    target = workdir / f"exabgp-{role}.conf"
    write_rendered(target, text, secret=has_secret(config))
    return target


def has_secret(config: Config) -> bool:
    """Whether the rendered ExaBGP text holds a secret (a TCP-MD5 password)."""
    return any(neighbor.md5_password for neighbor in config.bgp.neighbors)


def write_rendered(target: Path, text: str, *, secret: bool) -> None:
    """Write ``text`` to ``target`` atomically: a temporary file beside it, then a rename.

    With ``secret`` the file is created with mode 0600 (owner only) from the start,
    so the password is never readable by others, not even for a moment; an
    existing file with looser permissions is replaced, not rewritten in place.
    Otherwise the mode is 0644 less the umask, as for any new file.
    """
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600 if secret else 0o644)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        temporary.replace(target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def exec_exabgp(conf: Path) -> None:
    """Replace this process by ExaBGP running ``conf`` (never returns)."""
    binary = executable("exabgp")
    os.execve(binary, [binary, str(conf)], exabgp_environment(os.environ))
