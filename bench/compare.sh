#!/usr/bin/env bash
# Runs the same YCSB scenarios against Dyno (one node; a 3-node cluster at
# R=2/W=2 and at R=3/W=3), Redis, a 3-member etcd cluster, and RocksDB's own
# db_bench, all on loopback in one run, and writes bench/RESULTS.md.
#
#   bench/compare.sh                 # full run (about 15 minutes on 2 cores)
#   bench/compare.sh --quick --out /tmp/r.md   # a short run that checks the plumbing
#   bench/compare.sh --rounds 5      # more interleaved rounds of the paired runs
#
# The systems the goals compare run side by side, each paused while another
# is measured, and their paired runs repeat in interleaved rounds (3 by
# default); the report gives every round and the goals use the medians.
#
# Installs redis-server, etcd-server and rocksdb-tools from Debian's
# packages when they are missing.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"
ensure_build_deps
apt_install redis-server etcd-server rocksdb-tools
build_workspace
exec python3 "$DYNO_ROOT/bench/compare.py" --dyno "$CARGO_TARGET_DIR/debug/dyno" --bare "$CARGO_TARGET_DIR/debug/dyno-bare" "$@"
