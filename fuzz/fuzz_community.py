"""atheris harness: the `community` target of tests/fuzz/targets.py (see docs/security.md).

    .venv/bin/python fuzz/fuzz_community.py -max_total_time=60 /tmp/fuzz-community tests/corpus/community
"""

from __future__ import annotations

from harness import main

if __name__ == "__main__":
    main("community")
