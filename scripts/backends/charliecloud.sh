#!/usr/bin/env bash
# Charliecloud test backend: charliecloud.sh up|down|status
#
# up     install charliecloud-runtime; make sure the shared debootstrap rootfs exists
#        ($STATE/rootfs, built by the same lib function docker.sh uses); verify
#        `ch-run $STATE/rootfs -- python3 -c 'print(1)'`; print details JSON.
#        Note: ch-run has no network isolation; tests must still talk only to loopback.
# down   nothing runs between ch-run calls: nothing to stop (the rootfs stays).
# status exit 0 when the ch-run check works.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
LOG_TAG=charliecloud
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ch-run refuses to start when $USER is unset (CI may not set it).
export USER="${USER:-root}"

check_run() {
    local out
    out="$(timeout 60 ch-run "$ROOTFS" -- python3 -c 'print(1)')" || return 1
    [[ "$out" == 1 ]]
}

cmd_up() {
    require_root
    ensure_state_dirs
    apt_install charliecloud-runtime
    ensure_rootfs
    check_run || die "ch-run $ROOTFS -- python3 -c 'print(1)' failed"
    log "ok: ch-run $ROOTFS works"
    emit_json rootfs "$ROOTFS" mode daemonless env "json:{\"USER\": \"$USER\"}"
}

cmd_down() {
    log "charliecloud is daemonless; nothing to stop"
}

cmd_status() {
    if ! command -v ch-run >/dev/null; then
        log "ch-run not installed"
        return 1
    fi
    if ! rootfs_ready; then
        log "rootfs $ROOTFS missing or incomplete"
        return 1
    fi
    if ! check_run; then
        log "ch-run on $ROOTFS fails"
        return 1
    fi
    log "up: ch-run $ROOTFS works"
}

redirect_stdout_to_stderr
case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) die "usage: $0 up|down|status" ;;
esac
