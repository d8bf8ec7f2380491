#!/usr/bin/env bash
# The main job, from a fresh Debian 12 machine as root: set up (idempotent), then run the demo.
#
#   bash scripts/demo.sh
#
# Today the demo is `dyncast lab agent-demo`: the agent inside ExaBGP announcing
# two services to ExaBGP, FRR (route reflector + ADD-PATH client), BIRD and GoBGP
# in network namespaces, through a load change, a health failure, recovery and a
# stop. It cleans up every namespace and process it creates.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/dyncast lab agent-demo "$@"
