#!/usr/bin/env bash
# Podman test backend: podman.sh up|down|status
#
# up     install podman; write the default_ulimits drop-in this machine needs (podman's
#        default rlimits exceed the hard limits and root lacks CAP_SYS_RESOURCE, so every
#        `podman run` fails without it); `podman import` the shared debootstrap rootfs as
#        localhost/cuberun-base:bookworm when missing; verify a run; print details JSON.
# down   podman is daemonless: nothing to stop (the image and the drop-in stay).
# status exit 0 when a --network none run of the base image works.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
LOG_TAG=podman
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DROPIN_DIR=/etc/containers/containers.conf.d
DROPIN="$DROPIN_DIR/50-cuberun-ulimits.conf"

# limit_value RAW FALLBACK: a numeric limit ("unlimited" -> FALLBACK).
limit_value() {
    if [[ "$1" =~ ^[0-9]+$ ]]; then
        printf '%s\n' "$1"
    else
        printf '%s\n' "$2"
    fi
}

write_ulimits_dropin() {
    local nofile nproc pid_max hard_nproc
    nofile="$(limit_value "$(ulimit -Hn)" 1048576)"
    pid_max="$(cat /proc/sys/kernel/pid_max)"
    hard_nproc="$(limit_value "$(ulimit -Hu)" "$pid_max")"
    nproc=$(( hard_nproc < pid_max ? hard_nproc : pid_max ))
    mkdir -p "$DROPIN_DIR"
    if write_if_changed "$DROPIN" 644 <<EOF
# Written by cuberun scripts/backends/podman.sh (test machines only).
# Podman's default container rlimits exceed this machine's hard limits and root has no
# CAP_SYS_RESOURCE, so runc fails with "error setting rlimit type 7". Values computed from
# \`ulimit -Hn\`, \`ulimit -Hu\` and /proc/sys/kernel/pid_max.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
EOF
    then
        log "wrote $DROPIN (nofile=$nofile nproc=$nproc)"
    fi
}

run_true() {
    timeout 120 podman run --rm --network none --pull=never "$BASE_IMAGE" true
}

cmd_up() {
    require_root
    ensure_state_dirs
    apt_install podman
    write_ulimits_dropin
    if podman image exists "$BASE_IMAGE"; then
        log "base image $BASE_IMAGE present"
    else
        ensure_rootfs
        local start=$SECONDS
        log "podman import $ROOTFS as $BASE_IMAGE"
        rootfs_tar | timeout 600 podman import "${IMPORT_CHANGES[@]}" - "$BASE_IMAGE" >/dev/null
        log "imported in $(( SECONDS - start ))s"
    fi
    run_true || die "podman run --rm --network none --pull=never $BASE_IMAGE true failed"
    log "ok: podman run --network none --pull=never works"
    emit_json base_image "$BASE_IMAGE" mode daemonless ulimits_dropin "$DROPIN" env 'json:{}'
}

cmd_down() {
    log "podman is daemonless; nothing to stop"
}

cmd_status() {
    if ! command -v podman >/dev/null; then
        log "podman not installed"
        return 1
    fi
    if ! run_true >/dev/null 2>&1; then
        log "podman run of $BASE_IMAGE fails"
        return 1
    fi
    log "up: $BASE_IMAGE runs"
}

redirect_stdout_to_stderr
case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) die "usage: $0 up|down|status" ;;
esac
