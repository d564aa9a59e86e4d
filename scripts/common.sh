# Shared set-up for the scripts: sourced, not run.
#
# - Builds go to a persistent target directory outside the clone
#   ($CARGO_TARGET_DIR, default ~/.cache/dyno/target), so that the bundled
#   RocksDB (about 25 minutes on 2 cores) is compiled once per machine.
# - Installs the Debian/Ubuntu packages the build needs when they are
#   missing, and says clearly what to do when it cannot.

set -euo pipefail

DYNO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/dyno/target}"
mkdir -p "$CARGO_TARGET_DIR"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# apt_install PKG...: installs the packages that are not installed yet.
apt_install() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || die "missing packages ${missing[*]}, and apt-get is not available: install them by hand"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "missing packages ${missing[*]}: run 'sudo apt-get install ${missing[*]}' or run this as root"
        sudo=(sudo)
    fi
    say "installing ${missing[*]}"
    "${sudo[@]}" apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null \
        || die "could not install ${missing[*]}"
}

ensure_build_deps() {
    command -v cargo >/dev/null || die "cargo not found: install Rust from https://rustup.rs"
    # RocksDB's bindings are generated with libclang; it is compiled with g++.
    apt_install libclang-dev clang g++ make
    ensure_postgres
}

# The control plane's database: `dyno dev` and the tests start a private
# server from the system's binaries (they never use a system-wide one).
ensure_postgres() {
    if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
        apt_install postgresql
    fi
    # When running as root the server runs as the postgres user.
    if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
        die "Postgres is installed but there is no postgres user to run it as"
    fi
}

# The DynamoDB-compatible API is tested with boto3 and the AWS CLI, as
# users run them (from PyPI when they are missing).
ensure_aws_tools() {
    command -v python3 >/dev/null || apt_install python3
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    local pip=(python3 -m pip install -q --disable-pip-version-check)
    # Debian's system Python refuses user installs without this flag.
    python3 -m pip install --help 2>/dev/null | grep -q -- --break-system-packages \
        && pip+=(--break-system-packages)
    python3 -c "import boto3" 2>/dev/null || { say "installing boto3"; "${pip[@]}" boto3; }
    command -v aws >/dev/null || { say "installing the AWS CLI"; "${pip[@]}" awscli; }
}

# The console's end-to-end test drives a headless Chromium over WebDriver.
ensure_browser() {
    apt_install chromium chromium-driver
}

# The control plane's SQL is checked at compile time against the query data
# committed in controlplane/.sqlx, so builds need no database.
export SQLX_OFFLINE=true

# Builds every crate and test target. Always the whole workspace with all
# targets, the same selection as the tests: cargo resolves features per
# selection, and a different selection changes the features of RocksDB's
# build dependencies, which recompiles RocksDB from scratch.
build_workspace() {
    cargo build --workspace --all-targets
}
