# shellcheck shell=bash
# shellcheck disable=SC2034  # the paths and flags are read by the scripts that source this file
# Shared helpers of the GlanceSeg firmware scripts (sourced, never run).
#
# Every script runs with `set -euo pipefail`, takes --help and --dry-run, and routes each
# state-changing command through `run` so --dry-run prints the exact steps instead.
# --root DIR (where a script offers it) prefixes every path, for a staged tree.

GS_ROOT="${GS_ROOT:-}"
DRY_RUN=0
GS_CHANGED=0

gs_paths() {
    # Derive the appliance's paths under $GS_ROOT (empty: the live system).
    PREFIX="$GS_ROOT/opt/glanceseg"
    VENV="$PREFIX/venv"
    GLANCESEG_BIN="${GLANCESEG_BIN:-$VENV/bin/glanceseg}"
    MODELS_DIR="$PREFIX/models"
    ETC_DIR="$GS_ROOT/etc/glanceseg"
    CONFIG_FILE="$ETC_DIR/glanceseg.toml"
    DATA_DIR="$GS_ROOT/var/lib/glanceseg"
    CACHE_DIR="$GS_ROOT/var/cache/glanceseg"
    LOG_DIR="$GS_ROOT/var/log/glanceseg"
    KIOSK_DIR="$GS_ROOT/var/lib/glanceseg-kiosk"
    UNIT_DIR="$GS_ROOT/etc/systemd/system"
}

log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() { printf '%s: error: %s\n' "${0##*/}" "$*" >&2; exit "${2:-1}"; }
step() { printf '==> %s\n' "$*"; }

run() {
    # Run a command, or print it under --dry-run. Marks the run as having changed something.
    if [ "$DRY_RUN" -eq 1 ]; then
        printf '    [dry-run] %s\n' "$*"
        return 0
    fi
    printf '    + %s\n' "$*"
    GS_CHANGED=1
    "$@"
}

have() { command -v "$1" >/dev/null 2>&1; }

require_root_user() {
    # Live-system actions need root; staged trees (--root) and --dry-run do not.
    if [ -z "$GS_ROOT" ] && [ "$DRY_RUN" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
        die "run as root (sudo), or use --dry-run / --root DIR"
    fi
}

install_file() {
    # install_file SRC DEST MODE [OWNER:GROUP]: copy only when content, mode or owner differ
    # (idempotent). The owner is applied on the live system only, never in a staged --root.
    local src=$1 dest=$2 mode=$3 owner=${4:-}
    [ -n "$GS_ROOT" ] && owner=""
    if [ -f "$dest" ] && cmp -s "$src" "$dest" && [ "$(stat -c %a "$dest")" = "${mode#0}" ] \
        && { [ -z "$owner" ] || [ "$(stat -c %U:%G "$dest")" = "$owner" ]; }; then
        return 0
    fi
    if [ -n "$owner" ]; then
        run install -D -m "$mode" -o "${owner%%:*}" -g "${owner##*:}" "$src" "$dest"
    else
        run install -D -m "$mode" "$src" "$dest"
    fi
}

install_text() {
    # install_text DEST MODE [OWNER:GROUP] <<<TEXT: write stdin to DEST only when it differs.
    local dest=$1 mode=$2 owner=${3:-} tmp
    tmp=$(mktemp)
    cat >"$tmp"
    install_file "$tmp" "$dest" "$mode" "$owner"
    rm -f "$tmp"
}

ensure_dir() {
    # ensure_dir DIR MODE [OWNER:GROUP]: create a directory, or fix its mode/owner.
    local dir=$1 mode=$2 owner=${3:-}
    [ -n "$GS_ROOT" ] && owner=""
    if [ -d "$dir" ] && [ "$(stat -c %a "$dir")" = "${mode#0}" ] \
        && { [ -z "$owner" ] || [ "$(stat -c %U:%G "$dir")" = "$owner" ]; }; then
        return 0
    fi
    if [ -n "$owner" ]; then
        run install -d -m "$mode" -o "${owner%%:*}" -g "${owner##*:}" "$dir"
    else
        run install -d -m "$mode" "$dir"
    fi
}

app_env() {
    # Set APP_ENV to the `env ...` prefix that gives the app what its units give it: the
    # settings of glanceseg.env (EnvironmentFile=), the installed software update
    # (PYTHONPATH), this root's data folder and configuration. Without it a script checks or
    # builds for another configuration, or runs the base image's code against a database a
    # newer release has migrated. The env file's own GLANCESEG_DATA_DIR and GLANCESEG_CONFIG
    # are left out, so a staged --root keeps its paths.
    # The env file's settings are exported, not put on the command line: they hold secrets
    # (GLANCESEG_DICOMWEB_PASSWORD), and a command line is readable by every local user (ps,
    # /proc/PID/cmdline) for as long as the command runs, and is printed by `run` and --dry-run.
    # An exported variable is readable only by root and the app's own user.
    local line key value
    APP_ENV=(env -u GLANCESEG_BIN GLANCESEG_DATA_DIR="$DATA_DIR" GLANCESEG_CONFIG="$CONFIG_FILE")
    if [ -r "$ETC_DIR/glanceseg.env" ]; then
        while IFS= read -r line || [ -n "$line" ]; do
            line="${line#export }"
            case "$line" in
                GLANCESEG_DATA_DIR=* | GLANCESEG_CONFIG=*) continue ;;
                GLANCESEG_[A-Z0-9_]*=*) ;;
                *) continue ;;
            esac
            key="${line%%=*}"
            value="${line#*=}"
            value="${value%\"}" && value="${value#\"}"
            value="${value%\'}" && value="${value#\'}"
            export "${key?}=$value"
        done <"$ETC_DIR/glanceseg.env"
    fi
    if [ -d "$DATA_DIR/software/current/_site" ]; then
        APP_ENV+=(PYTHONPATH="$DATA_DIR/software/current/_site")
    fi
}

status_json() {
    # Print `glanceseg status --json` (empty output if the command is missing or fails).
    # As root on the live system it runs as the service user, so SQLite's -wal/-shm files
    # never end up owned by root (the service could no longer open its database).
    local as_user=()
    if [ -z "$GS_ROOT" ] && [ "$(id -u)" -eq 0 ] && id glanceseg >/dev/null 2>&1; then
        as_user=(runuser -u glanceseg --)
    fi
    if [ -x "$GLANCESEG_BIN" ]; then
        app_env
        "${as_user[@]}" "${APP_ENV[@]}" "$GLANCESEG_BIN" status --json 2>/dev/null || true
    fi
}

json_flatten() {
    # json_flatten <<<JSON: one "dotted.key<TAB>value" line per leaf (lists as JSON), for
    # loading into an associative array with a single Python start.
    python3 -c '
import json, sys
def walk(prefix, v):
    if isinstance(v, dict):
        for k, x in v.items():
            walk(prefix + [str(k)], x)
    elif v is not None:
        text = json.dumps(v) if isinstance(v, (list, bool)) else str(v)
        print(".".join(prefix) + "\t" + " ".join(text.split()))
try:
    data = json.load(sys.stdin)
except ValueError:
    sys.exit(0)
if isinstance(data, dict):
    walk([], data)
'
}

json_get() {
    # json_get KEY.PATH <<<JSON: print a value from JSON on stdin ("" when absent).
    python3 -c '
import json, sys
try:
    v = json.load(sys.stdin)
except ValueError:
    sys.exit(0)
for k in sys.argv[1].split("."):
    v = v.get(k) if isinstance(v, dict) else None
if v is None:
    sys.exit(0)
print(json.dumps(v) if isinstance(v, (dict, list, bool)) else v)
' "$1"
}

config_with_update_key() {
    # config_with_update_key FILE KEY_PATH: print FILE with [updates] public_key = KEY_PATH
    # (replacing the key in that section, adding it to the section, or adding the section).
    awk -v line="public_key = \"$2\"" '
        function flush() { if (in_updates && !done) { print line; done = 1 } }
        /^[[:space:]]*\[/ { flush(); in_updates = ($0 ~ /^[[:space:]]*\[updates\][[:space:]]*(#.*)?$/); print; next }
        in_updates && /^[[:space:]]*public_key[[:space:]]*=/ { flush(); next }
        { print }
        END { flush(); if (!done) printf "\n[updates]\n%s\n", line }
    ' "$1" || die "cannot read $1 to set [updates] public_key"
}

config_update_key() {
    # config_update_key FILE: print FILE's [updates] public_key (empty when unset or no FILE).
    [ -f "$1" ] || return 0
    awk -v quotes="[\"']" '
        /^[[:space:]]*\[/ { in_updates = ($0 ~ /^[[:space:]]*\[updates\][[:space:]]*(#.*)?$/); next }
        in_updates && /^[[:space:]]*public_key[[:space:]]*=/ {
            sub(/^[^=]*=[[:space:]]*/, ""); sub(/[[:space:]]*(#.*)?$/, ""); gsub(quotes, ""); print; exit
        }
    ' "$1"
}
