#!/usr/bin/env bash
# Tenant isolation under load (see bench/isolation.py):
#   bench/isolation.sh [--rate 500] [--duration 15] [--out bench/ISOLATION.md]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"
ensure_build_deps
build_workspace
exec python3 "$DYNO_ROOT/bench/isolation.py" --dyno "$CARGO_TARGET_DIR/debug/dyno" "$@"
