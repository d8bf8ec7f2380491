#!/usr/bin/env bash
# The test command: set up (idempotent), then lint, type-check and run every test.
#
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh -m 'not netns'  # extra arguments go to pytest
#
# Namespace and interop tests need root; as another user they are skipped with
# the reason. Every step runs even if an earlier one failed; the exit status is
# 1 if any failed. pytest collecting no test at all (exit 5) counts as a failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh

failed=()
step() {  # run every step even after a failure, so one run shows all problems
  local name=$1
  shift
  echo "== $name"
  local status=0
  "$@" || status=$?
  if [[ $name == pytest && $status -eq 5 ]]; then
    echo "pytest collected no tests: counted as a failure" >&2
  fi
  [[ $status -eq 0 ]] || failed+=("$name (exit $status)")
}

step ruff .venv/bin/ruff check .
step mypy .venv/bin/mypy
step pytest .venv/bin/pytest "$@"

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "all checks passed"
