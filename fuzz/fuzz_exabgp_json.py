"""atheris harness: the `exabgp_json` target of tests/fuzz/targets.py (see docs/security.md).

    .venv/bin/python fuzz/fuzz_exabgp_json.py -max_total_time=60 /tmp/fuzz-exabgp_json tests/corpus/exabgp_json
"""

from __future__ import annotations

from harness import main

if __name__ == "__main__":
    main("exabgp_json")
