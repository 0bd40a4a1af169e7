#!/usr/bin/env bash
# GPU code paths without a GPU: gpu.sh up|down|status
#
# up     a private dockerd ($STATE/gpu/docker.sock, no bridge) started with a STAND-IN
#        `nvidia-container-runtime-hook` (gpu/nvidia-container-runtime-hook) first on its PATH,
#        which makes dockerd enable its nvidia device driver: `docker run --gpus all|N|device=...`
#        then takes the real device-request path and the hook logs, one JSON line per container,
#        what it was asked for (NVIDIA_VISIBLE_DEVICES, NVIDIA_DRIVER_CAPABILITIES) to
#        $STATE/gpu/hook.log. A busybox probe image is imported; print the details JSON.
# down   stop that dockerd (recorded PID, cmdline checked).
# status exit 0 when `docker run --gpus 1` works on it.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
LOG_TAG=gpu
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
. "$HERE/lib.sh"

G="$STATE/gpu"
SOCK="$G/docker.sock"
HOOK_DIR="$G/hook-bin"
HOOK_LOG="$G/hook.log"
PROBE_IMAGE=localhost/cuberun-gpu-probe:1

install_hook() {
    mkdir -p "$HOOK_DIR"
    install -m 755 "$HERE/gpu/nvidia-container-runtime-hook" "$HOOK_DIR/nvidia-container-runtime-hook"
    printf '%s\n' "$HOOK_LOG" >"$HOOK_DIR/hook-log-path"
    touch "$HOOK_LOG"
}

ensure_probe_image() {
    local tree="$G/probe-image" a
    DOCKER_HOST="unix://$SOCK" docker image inspect "$PROBE_IMAGE" >/dev/null 2>&1 && return 0
    rm -rf "$tree" && mkdir -p "$tree/bin" "$tree/tmp" "$tree/etc"
    cp /bin/busybox "$tree/bin/busybox"
    for a in $("$tree/bin/busybox" --list); do
        [[ "$a" == busybox ]] || ln -sf busybox "$tree/bin/$a"
    done
    tar -C "$tree" -c . | DOCKER_HOST="unix://$SOCK" docker import -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' - "$PROBE_IMAGE" >/dev/null
    log "imported $PROBE_IMAGE"
}

gpu_run_works() {
    local before after
    before="$(wc -l <"$HOOK_LOG")"
    DOCKER_HOST="unix://$SOCK" timeout 60 docker run --rm --network none --gpus 1 "$PROBE_IMAGE" true >/dev/null 2>&1 || return 1
    after="$(wc -l <"$HOOK_LOG")"
    (( after > before )) && tail -n1 "$HOOK_LOG" | grep -q '"NVIDIA_VISIBLE_DEVICES": "0"'
}

cmd_up() {
    require_root
    ensure_state_dirs
    apt_install docker.io busybox-static
    mkdir -p "$G"
    install_hook
    # dockerd looks for the hook on ITS PATH when it starts
    PATH="$HOOK_DIR:$PATH" start_private_dockerd gpu-dockerd "$G"
    ensure_probe_image
    gpu_run_works || die "docker run --gpus 1 did not reach the stand-in hook (logs: $LOG_DIR/gpu-dockerd.log, $HOOK_LOG)"
    log "ok: docker run --gpus reaches the stand-in nvidia hook"
    emit_json docker_host "unix://$SOCK" hook_log "$HOOK_LOG" probe_image "$PROBE_IMAGE" \
        env "json:{\"DOCKER_HOST\": \"unix://$SOCK\"}"
}

cmd_down() {
    ensure_state_dirs
    stop_private_dockerd gpu-dockerd "$SOCK" "$G/docker-exec"
}

cmd_status() {
    [[ -S "$SOCK" ]] || { log "not up (no $SOCK)"; return 1; }
    gpu_run_works || { log "docker run --gpus 1 fails"; return 1; }
    log "up: $SOCK"
}

redirect_stdout_to_stderr
case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) die "usage: $0 up|down|status" ;;
esac
