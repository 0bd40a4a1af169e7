#!/usr/bin/env bash
# Image registry test backend: registry.sh up|down|status
#
# up     install Debian's docker-registry (the Docker distribution registry 2.8) and run it
#        on 127.0.0.1:15000 (plain HTTP: Docker allows that for loopback registries without any
#        daemon setting), storage in $STATE/registry/data; print the details JSON.
#        Used for kernel images pushed for Backend.AI and for digest-pinning tests.
# down   stop the registry this script started (recorded PID, cmdline checked). Data stays.
# status exit 0 when GET /v2/ answers.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
LOG_TAG=registry
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

R="$STATE/registry"
CONF="$R/config.yml"
ADDR=127.0.0.1:15000

answers() {
    [[ "$(curl -s -m 5 -o /dev/null -w '%{http_code}' "http://$ADDR/v2/")" == 200 ]]
}

cmd_up() {
    require_root
    ensure_state_dirs
    apt_install docker-registry curl
    mkdir -p "$R/data"
    local changed=0 pid
    if write_if_changed "$CONF" 644 <<EOC
# Written by cuberun scripts/backends/registry.sh (loopback only)
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $R/data
  delete:
    enabled: true
http:
  addr: $ADDR
EOC
    then
        changed=1
    fi
    pid="$(recorded_pid registry)"
    if [[ -n "$pid" ]] && pid_matches "$pid" docker-registry "$CONF"; then
        if (( changed == 0 )) && answers; then
            log "our registry (pid $pid) answers on $ADDR; reusing it"
        else
            stop_recorded registry 10 docker-registry "$CONF"
            pid=""
        fi
    else
        pid=""
    fi
    if [[ -z "$pid" ]]; then
        if answers; then
            die "$ADDR answers but is not our registry; refusing to start a second one"
        fi
        setsid nohup /usr/bin/docker-registry serve "$CONF" </dev/null >>"$LOG_DIR/registry.log" 2>&1 3>&- &
        record_pid registry "$!"
        wait_until 30 0.2 "the registry on $ADDR" answers ||
            { tail -n 20 "$LOG_DIR/registry.log" >&2; die "docker-registry did not answer on $ADDR within 30s"; }
        log "registry up on $ADDR (pid $(recorded_pid registry))"
    fi
    emit_json address "$ADDR" url "http://$ADDR" version "$(dpkg-query -W -f='${Version}' docker-registry)" env 'json:{}'
}

cmd_down() {
    ensure_state_dirs
    stop_recorded registry 10 docker-registry "$CONF"
}

cmd_status() {
    answers || { log "no registry answers on $ADDR"; return 1; }
    log "up: $ADDR"
}

redirect_stdout_to_stderr
case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) die "usage: $0 up|down|status" ;;
esac
