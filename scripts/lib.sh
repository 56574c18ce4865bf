# shellcheck shell=bash
# Shared helpers for scripts/test and scripts/quickstart. Source it; do not run it.
#
# Provides: REPO_ROOT, VENV, MODERN_VENV, stage, die, require_tools, ensure_redis, ensure_kubectl,
# ensure_promtool, ensure_venv, ensure_modern_venv, ensure_node_modules.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO_ROOT/.venv"
E2E_REQUIREMENTS="$REPO_ROOT/tests/e2e/requirements.txt"
DEPLOY_REQUIREMENTS="$REPO_ROOT/tests/deploy/requirements.txt"
BACKEND_REQUIREMENTS="$REPO_ROOT/examples/backend/requirements.txt"
MODERN_VENV="$REPO_ROOT/.venv-modern"
MODERN_REQUIREMENTS="$REPO_ROOT/examples/backend/requirements-modern.txt"
TS_DIR="$REPO_ROOT/tests/e2e/ts"

stage() {
    printf '\n==> %s\n' "$*"
}

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# require_tools CMD... : exit 1 naming every missing command.
require_tools() {
    local missing=() cmd
    for cmd in "$@"; do
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
    done
    if ((${#missing[@]})); then
        die "missing required tool(s): ${missing[*]} (install them and re-run)"
    fi
}

# ensure_redis: redis-server on PATH, installed with apt-get when we are root, else exit 1.
ensure_redis() {
    if command -v redis-server >/dev/null 2>&1; then
        return 0
    fi
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "redis-server not found; installing the Debian package redis-server"
        DEBIAN_FRONTEND=noninteractive apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server
        command -v redis-server >/dev/null 2>&1 || die "apt-get installed redis-server but it is not on PATH"
        return 0
    fi
    die "redis-server is missing: install it (Debian/Ubuntu: 'sudo apt-get install -y redis-server'), or run this script as root so it can install it"
}

# ensure_kubectl: a kubectl whose `kubectl kustomize` works (to render deploy/kubernetes), installed
# with apt-get (Debian's kubernetes-client) when we are root, else exit 1.
ensure_kubectl() {
    if command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
        return 0
    fi
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "kubectl not found; installing the Debian package kubernetes-client"
        DEBIAN_FRONTEND=noninteractive apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y kubernetes-client
        command -v kubectl >/dev/null 2>&1 || die "apt-get installed kubernetes-client but kubectl is not on PATH"
        kubectl kustomize --help >/dev/null 2>&1 || die "this kubectl has no 'kustomize' subcommand (kubectl 1.14 or later needed)"
        return 0
    fi
    die "kubectl is missing: install it (Debian/Ubuntu: 'sudo apt-get install -y kubernetes-client'), or run this script as root so it can install it"
}

# ensure_promtool: promtool (to check deploy/prometheus's alerting rules), from Debian's `prometheus`
# package (installed without recommends; the server it ships is not started) when we are root, else exit 1.
ensure_promtool() {
    if command -v promtool >/dev/null 2>&1; then
        return 0
    fi
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "promtool not found; installing the Debian package prometheus (for promtool)"
        DEBIAN_FRONTEND=noninteractive apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus
        command -v promtool >/dev/null 2>&1 || die "apt-get installed prometheus but promtool is not on PATH"
        return 0
    fi
    die "promtool is missing: install it (Debian/Ubuntu: 'sudo apt-get install -y --no-install-recommends prometheus'), or run this script as root so it can install it"
}

_sha256_of() {
    # Stable digest of the given files' contents plus the python version.
    {
        cat "$@"
        python3 --version 2>&1
    } | sha256sum | cut -d' ' -f1
}

# _venv_from DIR REQUIREMENTS...: create/refresh the virtualenv DIR from pinned requirement files;
# pip runs only when they changed (a stamp holds their digest).
_venv_from() {
    local dir="$1" stamp="$1/.requirements.sha256" want have="" file
    shift
    want="$(_sha256_of "$@")"
    if [[ ! -x "$dir/bin/python" ]]; then
        echo "creating $dir"
        python3 -m venv "$dir" || die "python3 -m venv failed (Debian/Ubuntu: apt-get install python3-venv)"
    fi
    [[ -f "$stamp" ]] && have="$(cat "$stamp")"
    if [[ "$want" == "$have" ]]; then
        echo "venv up to date ($dir)"
        return 0
    fi
    echo "installing pinned Python requirements into $dir"
    rm -f "$stamp"
    local args=()
    for file in "$@"; do args+=(-r "$file"); done
    "$dir/bin/python" -m pip install --disable-pip-version-check --quiet "${args[@]}"
    echo "$want" >"$stamp"
}

# ensure_venv: $VENV (tests, example backend; the Python SDK 1.x line).
ensure_venv() {
    _venv_from "$VENV" "$E2E_REQUIREMENTS" "$BACKEND_REQUIREMENTS" "$DEPLOY_REQUIREMENTS"
}

# ensure_modern_venv: $MODERN_VENV (the modern example backend and client; the Python SDK 2.x line).
ensure_modern_venv() {
    _venv_from "$MODERN_VENV" "$MODERN_REQUIREMENTS"
}

# ensure_node_modules: npm ci in tests/e2e/ts when node_modules is missing or older than the lockfile.
ensure_node_modules() {
    local stamp="$TS_DIR/node_modules/.e2e-lock.sha256" want have=""
    want="$(sha256sum "$TS_DIR/package-lock.json" | cut -d' ' -f1)"
    [[ -f "$stamp" ]] && have="$(cat "$stamp")"
    if [[ -d "$TS_DIR/node_modules" && "$want" == "$have" ]]; then
        echo "node_modules up to date ($TS_DIR)"
        return 0
    fi
    echo "npm ci in $TS_DIR"
    (cd "$TS_DIR" && npm ci --no-audit --no-fund)
    echo "$want" >"$stamp"
}
