"""atheris harness: the `config` target of tests/fuzz/targets.py (see docs/security.md).

    .venv/bin/python fuzz/fuzz_config.py -max_total_time=60 /tmp/fuzz-config tests/corpus/config
"""

from __future__ import annotations

from harness import main

if __name__ == "__main__":
    main("config")
