#!/usr/bin/env bash
# HTCondor test backend (single node, in the sid rootfs): htcondor.sh up|down|status|smoke
#
# up     build the sid rootfs when needed (sidroot.sh: it holds minicondor + condor 25.x);
#        start condor_master in the foreground inside it (in-sid: private mount + pid
#        namespaces, host network) with a configuration of ours ($STATE/htcondor/condor_config:
#        everything on 127.0.0.1:19618, spool/log/lock/run/execute under $STATE/htcondor, which
#        the namespaces see at the same path); wait for the startd; submit a vanilla job as the
#        non-root user cuberun-submit (HTCondor refuses root-owned jobs) and wait for it to
#        complete; print the details JSON. Clients: `$STATE/htcondor/bin/condor <tool> ...`
#        runs an HTCondor tool inside the rootfs with CONDOR_CONFIG set; $STATE/htcondor/userbin
#        holds condor_submit/_q/_history/_rm running as the submit user (the runner's bin_dir).
# down   condor_off, then stop the namespace's recorded PID (its pid 1 takes every daemon along).
# status exit 0 when condor_status lists the slot.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
LOG_TAG=htcondor
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
. "$HERE/lib.sh"
# shellcheck source=sidroot.sh
. "$HERE/sidroot.sh"

H="$STATE/htcondor"
CONF="$H/condor_config"
PORT=19618
SUBMIT_USER=cuberun-submit
TOOL="$H/bin/condor"
export CONDOR_CONFIG="$CONF"

write_config() {
    mkdir -p "$H"/{log,spool,lock,run,execute,cred,passwords.d,tokens.d,config.d,bin,jobs}
    chmod 755 "$H" "$H"/{log,spool,lock,run,execute}
    chmod 700 "$H/passwords.d" "$H/tokens.d" "$H/cred"
    chmod 1777 "$H/jobs"
    # the daemons drop to the rootfs's condor user (a uid the host may not know by name)
    local ids
    ids="$(awk -F: '$1 == "condor" { print $3 ":" $4 }' "$SID_ROOT/etc/passwd")"
    [[ -n "$ids" ]] || die "no condor user in $SID_ROOT/etc/passwd"
    chown "$ids" "$H"/{log,spool,lock,run,execute}
    write_if_changed "$CONF" 644 <<EOC || true
# Written by cuberun scripts/backends/htcondor.sh: a one-machine pool on loopback.
include : /etc/condor/condor_config
LOCAL_CONFIG_DIR = /usr/share/condor/config.d,/etc/condor/config.d,$H/config.d
EOC
    write_if_changed "$H/config.d/99-cuberun" 644 <<EOC || true
# read after minicondor's own files
CONDOR_HOST = 127.0.0.1
NETWORK_INTERFACE = 127.0.0.1
ENABLE_IPV6 = False
BIND_ALL_INTERFACES = False
COLLECTOR_HOST = 127.0.0.1:$PORT
SHARED_PORT_PORT = $PORT
USE_SHARED_PORT = True
LOCAL_DIR = $H
LOG = $H/log
SPOOL = $H/spool
LOCK = $H/lock
RUN = $H/run
EXECUTE = $H/execute
CRED_STORE_DIR = $H/cred
SEC_PASSWORD_DIRECTORY = $H/passwords.d
SEC_TOKEN_SYSTEM_DIRECTORY = $H/tokens.d
DAEMON_SOCKET_DIR = $H/run
CONDOR_ADMIN =
MAIL = /bin/true
NUM_CPUS = 2
EOC
    write_if_changed "$TOOL" 755 <<W || true
#!/bin/sh
# Written by cuberun scripts/backends/htcondor.sh: run an HTCondor tool of the sid rootfs.
# usage: condor TOOL [ARGS...]   e.g. condor condor_q -all
tool=\$1; shift
exec env CONDOR_CONFIG="$CONF" "$STATE/htcondor/bin/in-sid" "$SID_ROOT" "\$tool" "\$@"
W
    install -m 755 "$HERE/apptainer/in-sid" "$H/bin/in-sid"
    # the user-side tools the cuberun HTCondor runner calls (htcondor.bin_dir): each runs inside
    # the rootfs as the submit user, since HTCondor refuses jobs owned by root
    mkdir -p "$H/userbin"
    local t
    for t in condor_submit condor_q condor_history condor_rm; do
        write_if_changed "$H/userbin/$t" 755 <<W || true
#!/bin/sh
# Written by cuberun scripts/backends/htcondor.sh: $t as $SUBMIT_USER inside the sid rootfs.
exec env CONDOR_CONFIG="$CONF" "$H/bin/in-sid" "$SID_ROOT" runuser -u "$SUBMIT_USER" -- /usr/bin/$t "\$@"
W
    done
    # the machine's hostname must resolve inside the rootfs
    if ! grep -qw "$(hostname)" "$SID_ROOT/etc/hosts"; then
        printf '127.0.0.1\t%s\n' "$(hostname)" >>"$SID_ROOT/etc/hosts"
    fi
}

slot_up() {
    "$TOOL" condor_status -af Name 2>/dev/null | grep -q .
}

master_ours() {
    local pid
    pid="$(recorded_pid condor-ns)"
    [[ -n "$pid" ]] && pid_matches "$pid" unshare "$SID_ROOT" condor_master
}

start_master() {
    if master_ours && slot_up; then
        log "our condor_master (namespace pid $(recorded_pid condor-ns)) answers; reusing it"
        return 0
    fi
    if master_ours; then
        stop_recorded condor-ns 30 unshare "$SID_ROOT" condor_master
    fi
    log "starting condor_master in the sid rootfs"
    setsid nohup env CONDOR_CONFIG="$CONF" "$H/bin/in-sid" "$SID_ROOT" /usr/sbin/condor_master -f -t \
        </dev/null >>"$LOG_DIR/condor_master.out" 2>&1 3>&- &
    record_pid condor-ns "$!"
    if ! wait_until 120 1 "an HTCondor slot" slot_up; then
        tail -n 20 "$H/log/MasterLog" "$H/log/StartLog" >&2 2>/dev/null || true
        die "no HTCondor slot within 120s (logs: $H/log)"
    fi
}

smoke() {
    local d="$H/jobs/smoke" out
    rm -rf "$d"
    mkdir -p "$d"
    chmod 1777 "$d"
    cat >"$d/job.sub" <<J
universe = vanilla
executable = /bin/sh
arguments = "-c 'echo cuberun-condor-ok; id -un'"
output = $d/job.out
error = $d/job.err
log = $d/job.log
should_transfer_files = NO
queue
J
    chmod 644 "$d/job.sub"
    (cd "$d" && timeout 60 "$TOOL" runuser -u "$SUBMIT_USER" -- /usr/bin/condor_submit "$d/job.sub") >&2 || return 1
    timeout 180 "$TOOL" runuser -u "$SUBMIT_USER" -- /usr/bin/condor_wait -wait 170 "$d/job.log" >&2 || return 1
    out="$(cat "$d/job.out")"
    [[ "$out" == *cuberun-condor-ok*"$SUBMIT_USER"* ]]
}

cmd_up() {
    require_root
    ensure_state_dirs
    ensure_sid_rootfs
    write_config
    start_master
    smoke || { tail -n 20 "$H/log/SchedLog" "$H/log/StartLog" >&2 2>/dev/null || true; die "the smoke job did not complete (logs: $H/log)"; }
    local version
    version="$(sid_version condor)"
    log "ok: HTCondor $version, a vanilla job completed as $SUBMIT_USER"
    emit_json condor_config "$CONF" tool "$TOOL" bin_dir "$H/userbin" collector "127.0.0.1:$PORT" version "$version" \
        submit_user "$SUBMIT_USER" sid_root "$SID_ROOT" env "json:{\"CONDOR_CONFIG\": \"$CONF\"}"
}

cmd_down() {
    ensure_state_dirs
    local ns child grand
    ns="$(recorded_pid condor-ns)"
    if master_ours; then
        # SIGQUIT = fast shutdown of condor_master and its daemons; the namespace then ends
        for child in $(ps -o pid= --ppid "$ns" 2>/dev/null); do
            for grand in $(ps -o pid= --ppid "$child" 2>/dev/null); do
                if pid_matches "$grand" condor_master; then
                    kill -QUIT "$grand" 2>/dev/null || true
                fi
            done
        done
        wait_until 30 0.3 "the HTCondor namespace to end" _pid_not_matching "$ns" unshare "$SID_ROOT" || true
    fi
    stop_recorded condor-ns 20 unshare "$SID_ROOT" condor_master
}

cmd_status() {
    [[ -x "$TOOL" ]] || { log "not up (no $TOOL)"; return 1; }
    slot_up || { log "no HTCondor slot answers"; return 1; }
    log "up: HTCondor on 127.0.0.1:$PORT"
}

redirect_stdout_to_stderr
case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    smoke) smoke ;;
    *) die "usage: $0 up|down|status" ;;
esac
