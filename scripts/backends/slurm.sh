#!/usr/bin/env bash
# Slurm test backend (single node, no accounting): slurm.sh up|down|status
#
# up     install slurmctld slurmd slurm-client munge; run munged as user munge (reuse it
#        when `munge -n | unmunge` works); write $STATE/slurm/etc/slurm.conf; start
#        slurmctld then slurmd (reuse ours when they answer); wait for `scontrol ping` UP
#        and the node idle (resume it if down/drained); verify `sbatch --wait --wrap true`.
# down   stop slurmd, slurmctld and munged only if this script started them.
# status exit 0 when slurmctld answers and the node is usable.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
LOG_TAG=slurm
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SL="$STATE/slurm"
SLURM_CONF_PATH="$SL/etc/slurm.conf"
CLUSTER=cuberun
NODE=localhost
PARTITION=debug
CTLD_PIDFILE="$SL/run/slurmctld.pid"
SLURMD_PIDFILE="$SL/run/slurmd.pid"
ETC_LINK=/etc/slurm/slurm.conf
export SLURM_CONF="$SLURM_CONF_PATH"

munge_ok() {
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1
}

ensure_munged() {
    if munge_ok; then
        log "munged answers; reusing it"
        return 0
    fi
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating /etc/munge/munge.key"
        mungekey --create --keyfile=/etc/munge/munge.key
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    log "starting munged as user munge"
    runuser -u munge -- /usr/sbin/munged --force
    if ! wait_until 15 0.2 "munged to answer" munge_ok; then
        die "munged did not answer within 15s (see /var/log/munge/munged.log)"
    fi
    local pid
    pid="$(read_pidfile /run/munge/munged.pid)"
    if [[ -n "$pid" ]] && pid_matches "$pid" munged; then
        record_pid munged "$pid"
        log "munged up (pid $pid)"
    else
        log "warning: munged answers but its pid file is unreadable; it will not be stopped by down"
    fi
}

# write_slurm_conf: returns 0 when the file changed.
write_slurm_conf() {
    local mem_kb real_mem cpus comm addrs
    mem_kb="$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)"
    real_mem=$(( mem_kb / 1024 - 1024 ))
    (( real_mem >= 1024 )) || real_mem=1024
    cpus="$(nproc)"
    # Listen on loopback only: slurmctld binds to SlurmctldHost (localhost). NoInAddrAny
    # makes slurmd and the clients (srun's I/O ports) bind to what this host's name
    # resolves to, so it is used only when that is a loopback address.
    comm=NoCtldInAddrAny
    addrs="$(getent ahostsv4 "$(hostname)" | awk '{ print $1 }' | sort -u || true)"
    if [[ -n "$addrs" ]] && ! grep -qvx '127\..*' <<<"$addrs"; then
        comm="$comm,NoInAddrAny"
    else
        log "hostname $(hostname) does not resolve to loopback only; slurmd will listen on 0.0.0.0:6818"
    fi
    mkdir -p "$SL/etc" "$SL/state" "$SL/spool" "$SL/run" "$SL/log" "$SL/jobs"
    write_if_changed "$SLURM_CONF_PATH" 644 <<EOF
# Written by cuberun scripts/backends/slurm.sh: single-node test cluster, loopback only.
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmctldPort=6817
SlurmdPort=6818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
CommunicationParameters=$comm
StateSaveLocation=$SL/state
SlurmdSpoolDir=$SL/spool
SlurmctldPidFile=$CTLD_PIDFILE
SlurmdPidFile=$SLURMD_PIDFILE
SlurmctldLogFile=$SL/log/slurmctld.log
SlurmdLogFile=$SL/log/slurmd.log
# no cgroup plugins on this machine
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without it the first job takes the whole node's memory and jobs never run side by side
DefMemPerCPU=1024
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
MpiDefault=none
# no MTA here
MailProg=/bin/true
ReturnToService=2
KillWait=5
# finished jobs stay visible in 'scontrol show job' for 600 s (no accounting)
MinJobAge=600
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$SL/jobcomp.log
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

ctld_up() {
    timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP'
}

node_state() {
    timeout 10 sinfo -h -n "$NODE" -o %t 2>/dev/null | head -n1
}

ctld_ours() {
    local pid
    pid="$(recorded_pid slurmctld)"
    [[ -n "$pid" ]] && pid_matches "$pid" slurmctld "$SLURM_CONF_PATH"
}

slurmd_ours() {
    local pid
    pid="$(recorded_pid slurmd)"
    [[ -n "$pid" ]] && pid_matches "$pid" slurmd "$SLURM_CONF_PATH"
}

# record_daemon NAME PIDFILE: record the PID a daemonizing slurm daemon wrote.
record_daemon() {
    local name=$1 pidfile=$2 pid
    if ! wait_until 15 0.1 "$pidfile" test -s "$pidfile"; then
        die "$name wrote no pid file $pidfile (log: $SL/log/$name.log)"
    fi
    pid="$(read_pidfile "$pidfile")"
    if pid_matches "$pid" "$name" "$SLURM_CONF_PATH"; then
        record_pid "$name" "$pid"
        log "$name up (pid $pid)"
    else
        die "$name pid file $pidfile names pid $pid, which is not our $name"
    fi
}

start_slurmctld() {
    if ctld_up; then
        if ctld_ours; then
            log "our slurmctld (pid $(recorded_pid slurmctld)) answers; reusing it"
        else
            log "a slurmctld answers on localhost:6817 for our config (not started by us); reusing it"
        fi
        return 0
    fi
    if ctld_ours; then
        stop_recorded slurmctld 20 slurmctld "$SLURM_CONF_PATH"
    fi
    forget_pid slurmctld
    rm -f "$CTLD_PIDFILE"
    log "starting slurmctld"
    /usr/sbin/slurmctld -f "$SLURM_CONF_PATH" -i
    record_daemon slurmctld "$CTLD_PIDFILE"
    if ! wait_until 30 0.2 "scontrol ping to report UP" ctld_up; then
        tail -n 20 "$SL/log/slurmctld.log" >&2 || true
        die "slurmctld did not come up within 30s (log: $SL/log/slurmctld.log)"
    fi
}

start_slurmd() {
    if slurmd_ours; then
        log "our slurmd (pid $(recorded_pid slurmd)) is running; reusing it"
        return 0
    fi
    forget_pid slurmd
    rm -f "$SLURMD_PIDFILE"
    log "starting slurmd"
    /usr/sbin/slurmd -f "$SLURM_CONF_PATH" -N "$NODE"
    record_daemon slurmd "$SLURMD_PIDFILE"
}

# node_usable: idle (or running jobs). Resumes a node that is down or drained.
node_usable() {
    local state
    state="$(node_state)"
    case "$state" in
        idle | mix | alloc | comp) return 0 ;;
        down | drain | drained | drng | fail)
            log "node $NODE is $state; resuming it"
            timeout 10 scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
            ;;
    esac
    return 1
}

ensure_etc_link() {
    if [[ -e "$ETC_LINK" || -L "$ETC_LINK" ]]; then
        if [[ "$(readlink "$ETC_LINK" 2>/dev/null || true)" != "$SLURM_CONF_PATH" ]]; then
            log "$ETC_LINK exists and is not ours; clients need SLURM_CONF=$SLURM_CONF_PATH"
        fi
        return 0
    fi
    mkdir -p "$(dirname "$ETC_LINK")"
    ln -s "$SLURM_CONF_PATH" "$ETC_LINK"
    touch "$SL/etc-link.ours"
    log "linked $ETC_LINK -> $SLURM_CONF_PATH"
}

smoke() {
    (cd "$SL/jobs" && timeout 120 sbatch --wait --quiet --job-name=cuberun-smoke \
        --output="$SL/jobs/smoke-%j.out" --wrap true)
}

stop_slurm_daemons() {
    stop_recorded slurmd 15 slurmd "$SLURM_CONF_PATH"
    stop_recorded slurmctld 20 slurmctld "$SLURM_CONF_PATH"
}

cmd_up() {
    require_root
    ensure_state_dirs
    apt_install slurmctld slurmd slurm-client munge
    ensure_munged
    if write_slurm_conf; then
        log "wrote $SLURM_CONF_PATH"
        if ctld_ours || slurmd_ours; then
            log "config changed; restarting our slurm daemons"
            stop_slurm_daemons
        fi
    fi
    ensure_etc_link
    start_slurmctld
    start_slurmd
    local i=0 ok=1
    if ! wait_until 60 0.3 "node $NODE to become idle" node_usable; then
        ok=0
    fi
    if (( ok == 0 )); then
        timeout 10 sinfo -N -l >&2 || true
        tail -n 20 "$SL/log/slurmd.log" >&2 || true
        die "node $NODE is '$(node_state)', not idle, after 60s"
    fi
    for i in 1 2; do
        if smoke; then
            break
        fi
        (( i < 2 )) || die "sbatch --wait --wrap true failed"
        log "smoke job failed; retrying once"
    done
    log "ok: sbatch --wait --wrap true"
    emit_json slurm_conf "$SLURM_CONF_PATH" partition "$PARTITION" cluster "$CLUSTER" \
        node "$NODE" jobcomp_log "$SL/jobcomp.log" \
        env "json:{\"SLURM_CONF\": \"$SLURM_CONF_PATH\"}"
}

cmd_down() {
    ensure_state_dirs
    stop_slurm_daemons
    if [[ -n "$(recorded_pid munged)" ]]; then
        stop_recorded munged 10 munged
    else
        log "munged was not started by us; leaving it"
    fi
    if [[ -f "$SL/etc-link.ours" ]]; then
        if [[ -L "$ETC_LINK" && "$(readlink "$ETC_LINK")" == "$SLURM_CONF_PATH" ]]; then
            rm -f "$ETC_LINK"
            log "removed $ETC_LINK"
        fi
        rm -f "$SL/etc-link.ours"
    fi
}

cmd_status() {
    if [[ ! -f "$SLURM_CONF_PATH" ]]; then
        log "not up (no $SLURM_CONF_PATH)"
        return 1
    fi
    if ! ctld_up; then
        log "slurmctld does not answer"
        return 1
    fi
    local state
    state="$(node_state)"
    case "$state" in
        idle | mix | alloc | comp) log "up: node $NODE is $state" ;;
        *)
            log "slurmctld up, but node $NODE is '$state'"
            return 1
            ;;
    esac
}

redirect_stdout_to_stderr
case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) die "usage: $0 up|down|status" ;;
esac
