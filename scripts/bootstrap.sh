# Sourced by scripts/up and scripts/test: installs what zonepurge needs on Debian or Ubuntu.
#
# - Python 3.11+ with venv, and redis-server (unless REDIS_URL names a Redis to use), from apt
#   when missing (as root, or through sudo);
# - a virtual environment in .venv with zonepurge and its test tools, re-installed whenever
#   pyproject.toml changes.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

say() { printf 'zonepurge: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

APT_UPDATED=0
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        say "missing: $*; install it with your package manager and run this again"
        exit 1
    fi
    if [ "$APT_UPDATED" -eq 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        APT_UPDATED=1
    fi
    say "installing $* with apt-get"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

PYTHON_BIN="$(find_python || true)"
if [ -z "$PYTHON_BIN" ]; then
    apt_install python3 python3-venv
    PYTHON_BIN="$(find_python || true)"
    [ -n "$PYTHON_BIN" ] || { say "Python 3.11 or newer is needed"; exit 1; }
fi

if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PYTHON_BIN" -m venv --help >/dev/null 2>&1 || ! "$PYTHON_BIN" -c 'import ensurepip' 2>/dev/null; then
        version="$("$PYTHON_BIN" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
        apt_install "python${version}-venv" || apt_install python3-venv
    fi
    say "creating $VENV"
    "$PYTHON_BIN" -m venv "$VENV"
fi

if [ -z "${REDIS_URL:-}" ] && ! command -v redis-server >/dev/null 2>&1; then
    apt_install redis-server
fi

# The test suite checks docker-compose.yml with Compose itself: the docker CLI's plugin if
# there is one, else Debian's docker-compose (it needs no Docker engine for `config`).
if [ "${ZONEPURGE_TEST_TOOLS:-0}" = 1 ] && ! docker compose version >/dev/null 2>&1 &&
    ! command -v docker-compose >/dev/null 2>&1; then
    apt_install docker-compose
fi

STAMP="$VENV/.zonepurge-installed"
WANT="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    say "installing zonepurge and its dependencies into .venv"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[test]"
    echo "$WANT" >"$STAMP"
fi
