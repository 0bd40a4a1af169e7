#!/usr/bin/env bash
# Docker test backend: docker.sh up|down|status
#
# up     install docker.io + debootstrap when missing; reuse a docker engine that already
#        answers (current DOCKER_HOST, a dockerd we started earlier, or the default socket),
#        otherwise start our own dockerd on $STATE/docker.sock with no bridge network;
#        build localhost/cuberun-base:bookworm from a debootstrap rootfs when missing;
#        print the details JSON on stdout.
# down   stop the dockerd this script started (recorded PID + cmdline check) and nothing else.
# status exit 0 when the engine and the base image are usable.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
LOG_TAG=docker
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OWN_SOCK="$STATE/docker.sock"
OWN_HOST="unix://$OWN_SOCK"
DATA_ROOT="$STATE/docker-data"
EXEC_ROOT="$STATE/docker-exec"
DAEMON_PIDFILE="$EXEC_ROOT/docker.pid"
HOST_FILE="$STATE/docker.host"

# docker_answers HOST: `docker info` succeeds against HOST ("" = the client's default).
docker_answers() {
    if [[ -n "$1" ]]; then
        DOCKER_HOST="$1" timeout 20 docker info >/dev/null 2>&1
    else
        env -u DOCKER_HOST timeout 20 docker info >/dev/null 2>&1
    fi
}

# default_host: the endpoint the client uses without DOCKER_HOST (its current context).
default_host() {
    local h
    h="$(env -u DOCKER_HOST timeout 10 docker context inspect --format '{{.Endpoints.docker.Host}}' 2>/dev/null || true)"
    printf '%s\n' "${h:-unix:///var/run/docker.sock}"
}

own_dockerd_running() {
    local pid
    pid="$(recorded_pid dockerd)"
    [[ -n "$pid" ]] && pid_matches "$pid" dockerd "$OWN_SOCK"
}

start_own_dockerd() {
    local pid daemon_pid dockerd_bin child
    dockerd_bin="$(command -v dockerd || true)"
    [[ -n "$dockerd_bin" ]] || die "dockerd not found after installing docker.io"

    if own_dockerd_running; then
        pid="$(recorded_pid dockerd)"
        log "our dockerd (pid $pid) is running but not answering yet; waiting"
        if wait_until 60 0.5 "our dockerd to answer" docker_answers "$OWN_HOST"; then
            return 0
        fi
        log "our dockerd does not answer; restarting it"
        stop_recorded dockerd 30 dockerd "$OWN_SOCK"
    fi

    # A daemon pid file left by an unclean exit blocks a new start; remove it only when
    # the PID in it is not a dockerd on our socket.
    daemon_pid="$(read_pidfile "$DAEMON_PIDFILE")"
    if [[ -n "$daemon_pid" ]] && pid_matches "$daemon_pid" dockerd "$OWN_SOCK"; then
        die "an unrecorded dockerd (pid $daemon_pid) owns $OWN_SOCK but does not answer; stop it first"
    fi
    rm -f "$DAEMON_PIDFILE" "$OWN_SOCK"
    mkdir -p "$DATA_ROOT" "$EXEC_ROOT"

    log "starting our dockerd on $OWN_HOST (no bridge, no iptables)"
    setsid nohup "$dockerd_bin" \
        --bridge=none --iptables=false --ip-masq=false --ip6tables=false \
        -H "$OWN_HOST" \
        --data-root "$DATA_ROOT" \
        --exec-root "$EXEC_ROOT" \
        --pidfile "$DAEMON_PIDFILE" \
        </dev/null >>"$LOG_DIR/dockerd.log" 2>&1 &
    pid=$!
    record_pid dockerd "$pid"
    if ! wait_until 90 0.5 "dockerd on $OWN_HOST" docker_answers "$OWN_HOST"; then
        tail -n 20 "$LOG_DIR/dockerd.log" >&2 || true
        stop_recorded dockerd 30 dockerd "$OWN_SOCK" || true
        die "dockerd did not answer within 90s (log: $LOG_DIR/dockerd.log)"
    fi
    daemon_pid="$(read_pidfile "$DAEMON_PIDFILE")"
    if [[ -n "$daemon_pid" && "$daemon_pid" != "$pid" ]] && pid_matches "$daemon_pid" dockerd "$OWN_SOCK"; then
        log "dockerd pid file says $daemon_pid (not $pid); recording that"
        record_pid dockerd "$daemon_pid"
        pid=$daemon_pid
    fi
    # dockerd runs its own containerd as a child; remember it so `down` can clean up
    # after a dockerd that had to be SIGKILLed.
    for child in $(ps -o pid= --ppid "$pid" 2>/dev/null); do
        if pid_matches "$child" containerd "$EXEC_ROOT"; then
            record_pid docker-containerd "$child"
        fi
    done
    log "dockerd up (pid $pid)"
}

ensure_base_image() {
    local host=$1 start
    if DOCKER_HOST="$host" docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        log "base image $BASE_IMAGE present"
        return 0
    fi
    ensure_rootfs
    start=$SECONDS
    log "docker import $ROOTFS as $BASE_IMAGE"
    rootfs_tar | DOCKER_HOST="$host" docker import "${IMPORT_CHANGES[@]}" - "$BASE_IMAGE" >/dev/null
    log "imported in $(( SECONDS - start ))s"
}

smoke() {
    DOCKER_HOST="$1" timeout 120 docker run --rm --network none "$BASE_IMAGE" \
        python3 -c 'import numpy, yaml'
}

cmd_up() {
    require_root
    ensure_state_dirs
    apt_install docker.io debootstrap

    local host="" mode
    if [[ -n "${DOCKER_HOST:-}" ]] && docker_answers "$DOCKER_HOST"; then
        host="$DOCKER_HOST"
        mode=reused
        log "reusing the docker engine at DOCKER_HOST=$host"
    elif own_dockerd_running && docker_answers "$OWN_HOST"; then
        host="$OWN_HOST"
        mode=ours
        log "our dockerd (pid $(recorded_pid dockerd)) already answers on $host"
    elif docker_answers ""; then
        host="$(default_host)"
        mode=reused
        log "reusing the default docker engine at $host (it will not be restarted or stopped)"
    else
        start_own_dockerd
        host="$OWN_HOST"
        mode=started
    fi
    printf '%s\n' "$host" >"$HOST_FILE"

    ensure_base_image "$host"
    smoke "$host" || die "smoke run of $BASE_IMAGE failed on $host"
    log "ok: docker run --rm --network none $BASE_IMAGE works"
    emit_json docker_host "$host" base_image "$BASE_IMAGE" mode "$mode" \
        env "json:{\"DOCKER_HOST\": \"$host\"}"
}

cmd_down() {
    ensure_state_dirs
    if [[ -z "$(recorded_pid dockerd)" ]]; then
        log "no dockerd started by us; nothing to stop"
    else
        stop_recorded dockerd 30 dockerd "$OWN_SOCK"
    fi
    stop_recorded docker-containerd 10 containerd "$EXEC_ROOT"
    rm -f "$HOST_FILE"
}

cmd_status() {
    local host
    host="$(cat "$HOST_FILE" 2>/dev/null || true)"
    if [[ -z "$host" ]]; then
        log "not up (no $HOST_FILE)"
        return 1
    fi
    if ! docker_answers "$host"; then
        log "engine at $host does not answer"
        return 1
    fi
    if ! DOCKER_HOST="$host" docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        log "engine at $host answers, but $BASE_IMAGE is missing"
        return 1
    fi
    log "up: $host, image $BASE_IMAGE present"
}

redirect_stdout_to_stderr
case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) die "usage: $0 up|down|status" ;;
esac
