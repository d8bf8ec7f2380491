"""atheris harness: the `replay` target of tests/fuzz/targets.py (see docs/security.md).

    .venv/bin/python fuzz/fuzz_replay.py -max_total_time=60 /tmp/fuzz-replay tests/corpus/replay
"""

from __future__ import annotations

from harness import main

if __name__ == "__main__":
    main("replay")
