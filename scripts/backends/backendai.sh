#!/usr/bin/env bash
# Backend.AI test backend (26.9.6): backendai.sh build|up|down|status
# (the full description is in cmd_up below and in docs/testing.md)
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
LOG_TAG=backendai
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
. "$HERE/lib.sh"

BAI_VERSION=26.9.6
BAI_PYTHON_MINOR=3.13
BAI_REV=1
BAI_CACHE="$CACHE_DIR/backendai-$BAI_VERSION"
VENV="$BAI_CACHE/venv"
BAI_PACKAGES=(
    "backend.ai-manager==$BAI_VERSION" "backend.ai-agent==$BAI_VERSION" "backend.ai-storage-proxy==$BAI_VERSION"
    "backend.ai-accelerator-mock==$BAI_VERSION" "backend.ai-client==$BAI_VERSION"
)

bai_key() {
    printf 'backendai %s rev %s: %s\n' "$BAI_VERSION" "$BAI_REV" "${BAI_PACKAGES[*]}"
}

python313() {
    local p
    for p in "${PYENV_ROOT:-/root/.pyenv}"/versions/$BAI_PYTHON_MINOR.*/bin/python$BAI_PYTHON_MINOR \
        /usr/local/bin/python$BAI_PYTHON_MINOR /usr/bin/python$BAI_PYTHON_MINOR; do
        if [[ -x "$p" ]]; then
            printf '%s\n' "$p"
            return 0
        fi
    done
    return 1
}

_bai_build() {
    local key py partial start
    key="$(bai_key)"
    if cache_valid "$BAI_CACHE" "$key"; then
        log "Backend.AI $BAI_VERSION venv cached in $VENV"
        return 0
    fi
    py="$(python313)" || die "Backend.AI $BAI_VERSION needs Python $BAI_PYTHON_MINOR (pyenv install $BAI_PYTHON_MINOR, or Debian's python$BAI_PYTHON_MINOR)"
    partial="$BAI_CACHE.partial"
    cache_rm_tree "$partial"
    mkdir -p "$partial"
    start=$SECONDS
    log "creating the Backend.AI venv with $py and installing ${BAI_PACKAGES[*]} (takes minutes)"
    "$py" -m venv "$partial/venv"
    if ! "$partial/venv/bin/python" -m pip install --disable-pip-version-check -q "${BAI_PACKAGES[@]}" \
        >"$LOG_DIR/backendai-pip.log" 2>&1; then
        tail -n 20 "$LOG_DIR/backendai-pip.log" >&2 || true
        cache_rm_tree "$partial"
        die "pip install of Backend.AI $BAI_VERSION failed (log: $LOG_DIR/backendai-pip.log)"
    fi
    # the sample configs and the fixtures that match this release ship in backend.ai-install
    mkdir -p "$partial/install"
    "$partial/venv/bin/python" -m pip download --disable-pip-version-check -q --no-deps -d "$partial/install" \
        "backend.ai-install==$BAI_VERSION" >>"$LOG_DIR/backendai-pip.log" 2>&1 ||
        { cache_rm_tree "$partial"; die "pip download backend.ai-install==$BAI_VERSION failed"; }
    (cd "$partial/install" && "$partial/venv/bin/python" -m zipfile -e ./*.whl unpacked) ||
        { cache_rm_tree "$partial"; die "cannot unpack the backend.ai-install wheel"; }
    # venvs are not relocatable: the scripts name their interpreter by path
    cache_rm_tree "$BAI_CACHE"
    mv "$partial" "$BAI_CACHE"
    "$py" -m venv --upgrade "$VENV" >/dev/null
    grep -rl --null "$partial/venv" "$VENV/bin" | xargs -0 -r sed -i "s|$partial/venv|$VENV|g"
    cache_seal "$BAI_CACHE" "$key"
    log "Backend.AI $BAI_VERSION installed in $(( SECONDS - start ))s ($(du -sh "$VENV" | cut -f1))"
}

cmd_build() {
    require_root
    ensure_state_dirs
    mkdir -p "$CACHE_DIR"
    with_lock "$CACHE_DIR/backendai.lock" 3600 _bai_build
}

redirect_stdout_to_stderr
case "${1:-}" in
    build) cmd_build ;;
    *) die "usage: $0 build|up|down|status" ;;
esac
