"""atheris harness: the `ctl` target of tests/fuzz/targets.py (see docs/security.md).

    .venv/bin/python fuzz/fuzz_ctl.py -max_total_time=60 /tmp/fuzz-ctl tests/corpus/ctl
"""

from __future__ import annotations

from harness import main

if __name__ == "__main__":
    main("ctl")
