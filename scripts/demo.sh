#!/usr/bin/env bash
# The main job, from a fresh Debian 12 machine as root: set up (idempotent), then run the demo.
#
#   bash scripts/demo.sh            # the three-site story, about 3-4 minutes
#   bash scripts/demo.sh --scale 0.3 --no-live
#
# `dyncast lab demo` builds labs/three-site/three-site.clab.yml in network
# namespaces (two client sites, two ingress D-Routers running ExaBGP + dyncast
# router, an FRR route reflector with ADD-PATH, an FRR transit with no route
# for the service address, three edge sites running ExaBGP + dyncast agent in
# front of real HTTP instances), drives client load and plays the story:
# steady state, a load spike, an instance failure, a degraded link, a drain,
# recovery. It shows a live view, writes a report (Markdown + PNG plots) and
# prints where it is. Every namespace and process it creates is removed at the
# end, on Ctrl-C and on error.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/dyncast lab demo "$@"
