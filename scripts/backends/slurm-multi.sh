#!/usr/bin/env bash
# Multi-node Slurm test backend: slurm-multi.sh up|down|status
#
# A cluster of its own (ClusterName=cuberunmulti, slurmctld on 10.201.0.10:16817, state in
# $STATE/slurm-multi), so the single-node cluster of slurm.sh keeps working beside it:
#   - three "nodes" mnode1..3, each a slurmd in its own network namespace (cuberun-mn1..3,
#     10.201.0.2..4, port 16818), and slurmctld in one more (cuberun-mctl, 10.201.0.10), all on
#     a bridge inside a namespace of its own (cuberun-mnet); the host, where clients such as
#     sbatch run, reaches them from 10.201.0.1 over one veth: no daemon listens on the host's
#     own interfaces and no forwarding is needed;
#   - munge: the host's munged (shared with slurm.sh: started and stopped by whichever script
#     started it);
#   - one filesystem: the workspace path is the same on every node, as on a shared filesystem.
# Each node has 1 CPU, so a sweep's job array spreads over the nodes. ReturnToService=2 and
# SlurmdTimeout=10: a node whose slurmd dies goes DOWN within seconds and its batch jobs are
# requeued (JobRequeue=1); `up` brings a killed node back.
# down   stop the slurmds and slurmctld we started (recorded PIDs), delete our netns/veths.
# status exit 0 when slurmctld answers and every node is usable.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
LOG_TAG=slurm-multi
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SL="$STATE/slurm-multi"
CONF="$SL/etc/slurm.conf"
CLUSTER=cuberunmulti
PARTITION=multi
CTL_ADDR=10.201.0.10
HOST_ADDR=10.201.0.1
NET_NS=cuberun-mnet
CTL_NS=cuberun-mctl
BRIDGE=crm-br
ROOT_VETH=crm-host
CTL_PORT=16817
SLURMD_PORT=16818
NODES=(mnode1 mnode2 mnode3)
export SLURM_CONF="$CONF"

node_addr() { printf '10.201.0.%d\n' $(( ${1#mnode} + 1 )); }

ns_exists() {
    ip netns list | awk '{ print $1 }' | grep -qx "$1"
}

munge_ok() {
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1
}

ensure_munged() {
    if munge_ok; then
        return 0
    fi
    # the same steps as slurm.sh (shared munged); recorded under our name, so our down stops it
    if [[ ! -s /etc/munge/munge.key ]]; then
        mungekey --create --keyfile=/etc/munge/munge.key
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    runuser -u munge -- /usr/sbin/munged --force
    wait_until 15 0.2 "munged to answer" munge_ok || die "munged did not answer within 15s"
    local pid
    pid="$(read_pidfile /run/munge/munged.pid)"
    if [[ -n "$pid" ]] && pid_matches "$pid" munged; then
        record_pid slurm-multi-munged "$pid"
    fi
}

# ensure_ns NS: a network namespace of ours (remembered, so down deletes only ours).
ensure_ns() {
    mkdir -p "$SL/net"
    if ! ns_exists "$1"; then
        ip netns add "$1"
        touch "$SL/net/$1.ours"
    fi
    ip netns exec "$1" ip link set lo up
}

# attach NS ADDR INDEX: a veth from NS (address ADDR/24) to the bridge of the network namespace.
attach() {
    local ns=$1 addr=$2 i=$3 near="crm$3-n" far="crm$3-b"
    if ! ip netns exec "$NET_NS" ip link show "$far" >/dev/null 2>&1; then
        ip netns exec "$ns" ip link del "$near" >/dev/null 2>&1 || true
        ip netns exec "$NET_NS" ip link add "$far" type veth peer name "$near"
        ip netns exec "$NET_NS" ip link set "$near" netns "$ns"
    fi
    ip netns exec "$NET_NS" ip link set "$far" master "$BRIDGE" up
    ip netns exec "$ns" ip addr replace "$addr/24" dev "$near"
    ip netns exec "$ns" ip link set "$near" up
}

# The network: a bridge inside its own namespace (cuberun-mnet); the controller (cuberun-mctl,
# 10.201.0.10) and the nodes (cuberun-mn1..3, 10.201.0.2..4) each on a veth to it; the host
# reaches them from 10.201.0.1 (/32 address plus one /24 route on its own veth, nothing else).
ensure_network() {
    local conflict node
    conflict="$(ip -4 route show match 10.201.0.10 | awk -v dev="$ROOT_VETH" '$1 != "default" && $0 !~ (" dev " dev "( |$)")')"
    [[ -z "$conflict" ]] || die "a route to 10.201.0.0/24 that is not ours exists ($conflict); refusing to touch it"
    ensure_ns "$NET_NS"
    ip netns exec "$NET_NS" ip link show "$BRIDGE" >/dev/null 2>&1 || ip netns exec "$NET_NS" ip link add "$BRIDGE" type bridge
    ip netns exec "$NET_NS" ip link set "$BRIDGE" up
    if ! ip link show "$ROOT_VETH" >/dev/null 2>&1; then
        ip netns exec "$NET_NS" ip link del crm-host-b >/dev/null 2>&1 || true
        ip link add "$ROOT_VETH" type veth peer name crm-host-b
        ip link set crm-host-b netns "$NET_NS"
        touch "$SL/net/$ROOT_VETH.ours"
    fi
    ip netns exec "$NET_NS" ip link set crm-host-b master "$BRIDGE" up
    ip addr replace "$HOST_ADDR/32" dev "$ROOT_VETH"
    ip link set "$ROOT_VETH" up
    ip route replace 10.201.0.0/24 dev "$ROOT_VETH" src "$HOST_ADDR"
    ensure_ns "$CTL_NS"
    attach "$CTL_NS" "$CTL_ADDR" 0
    for node in "${NODES[@]}"; do
        ensure_ns "cuberun-mn${node#mnode}"
        attach "cuberun-mn${node#mnode}" "$(node_addr "$node")" "${node#mnode}"
    done
}

write_conf() {
    local node lines=""
    for node in "${NODES[@]}"; do
        lines+="NodeName=$node NodeAddr=$(node_addr "$node") NodeHostname=$node CPUs=1 RealMemory=1024 State=UNKNOWN"$'\n'
    done
    mkdir -p "$SL"/{etc,state,spool,run,log,jobs}
    write_if_changed "$CONF" 644 <<EOF2
# Written by cuberun scripts/backends/slurm-multi.sh: three nodes in network namespaces.
ClusterName=$CLUSTER
SlurmctldHost=$(hostname -s)($CTL_ADDR)
SlurmctldPort=$CTL_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# slurmctld and every slurmd listen inside their own network namespaces only
StateSaveLocation=$SL/state
SlurmdSpoolDir=$SL/spool/%n
SlurmctldPidFile=$SL/run/slurmctld.pid
SlurmdPidFile=$SL/run/slurmd-%n.pid
SlurmctldLogFile=$SL/log/slurmctld.log
SlurmdLogFile=$SL/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SlurmdTimeout=10
JobRequeue=1
KillWait=5
MinJobAge=600
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$SL/jobcomp.log
$lines
PartitionName=$PARTITION Nodes=$(IFS=,; echo "${NODES[*]}") Default=YES MaxTime=INFINITE State=UP
EOF2
}

ctld_up() {
    timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP'
}

ctld_ours() {
    local pid
    pid="$(recorded_pid slurm-multi-ctld)"
    [[ -n "$pid" ]] && pid_matches "$pid" slurmctld "$CONF"
}

slurmd_ours() {
    local pid
    pid="$(recorded_pid "slurm-multi-$1")"
    [[ -n "$pid" ]] && pid_matches "$pid" slurmd "$CONF" "$1"
}

record_daemon() {  # record_daemon NAME PIDFILE PATTERN...
    local name=$1 pidfile=$2 pid
    shift 2
    wait_until 15 0.1 "$pidfile" test -s "$pidfile" || die "no pid file $pidfile"
    pid="$(read_pidfile "$pidfile")"
    pid_matches "$pid" "$@" || die "$pidfile names pid $pid, which is not ours"
    record_pid "$name" "$pid"
}

start_ctld() {
    if ctld_ours && ctld_up; then
        log "our slurmctld (pid $(recorded_pid slurm-multi-ctld)) answers; reusing it"
        return 0
    fi
    if ctld_ours; then
        stop_recorded slurm-multi-ctld 20 slurmctld "$CONF"
    fi
    rm -f "$SL/run/slurmctld.pid"
    nsenter --net="/run/netns/$CTL_NS" /usr/sbin/slurmctld -f "$CONF" -i 3>&-
    record_daemon slurm-multi-ctld "$SL/run/slurmctld.pid" slurmctld "$CONF"
    wait_until 30 0.2 "slurmctld to answer" ctld_up ||
        { tail -n 20 "$SL/log/slurmctld.log" >&2; die "slurmctld did not come up within 30s"; }
}

start_slurmd() {
    local node=$1
    if slurmd_ours "$node"; then
        return 0
    fi
    rm -f "$SL/run/slurmd-$node.pid"
    mkdir -p "$SL/spool/$node"
    # nsenter, not `ip netns exec`: that remounts /sys, hiding /sys/fs/cgroup, which slurmd needs
    nsenter --net="/run/netns/cuberun-mn${node#mnode}" /usr/sbin/slurmd -f "$CONF" -N "$node" 3>&-
    record_daemon "slurm-multi-$node" "$SL/run/slurmd-$node.pid" slurmd "$CONF" "$node"
    log "slurmd $node up in cuberun-mn${node#mnode} at $(node_addr "$node")"
}

nodes_usable() {
    local states bad=0 node state
    states="$(timeout 10 sinfo -h -N -o '%N %t' 2>/dev/null)" || return 1
    for node in "${NODES[@]}"; do
        state="$(awk -v n="$node" '$1 == n { print $2 }' <<<"$states")"
        case "$state" in
            idle | mix | alloc | comp) ;;
            *)
                bad=1
                timeout 10 scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true
                ;;
        esac
    done
    return "$bad"
}

smoke() {
    local out
    out="$(cd "$SL/jobs" && timeout 120 sbatch --wait --parsable --array=0-2 --nodes=1 \
        --output="$SL/jobs/smoke-%A_%a.out" --wrap 'echo "$(hostname) $SLURMD_NODENAME"')" || return 1
    # three elements, on three different nodes (1 CPU each, all submitted at once)
    cat "$SL"/jobs/smoke-"${out%%;*}"_*.out | awk '{ print $2 }' | sort -u | wc -l | grep -qx 3
}

cmd_up() {
    require_root
    ensure_state_dirs
    apt_install slurmctld slurmd slurm-client munge iproute2
    ensure_munged
    local node changed=0
    ensure_network
    if write_conf; then
        changed=1
    fi
    if (( changed == 1 )); then
        for node in "${NODES[@]}"; do
            stop_recorded "slurm-multi-$node" 15 slurmd "$CONF" "$node"
        done
        stop_recorded slurm-multi-ctld 20 slurmctld "$CONF"
    fi
    start_ctld
    for node in "${NODES[@]}"; do
        start_slurmd "$node"
    done
    wait_until 90 0.5 "every node to be idle" nodes_usable ||
        { timeout 10 sinfo -N -l >&2 || true; die "not every node of $CLUSTER is usable after 90s"; }
    smoke || die "the smoke array (one element per node) failed"
    log "ok: $CLUSTER with ${#NODES[@]} nodes; an array ran one element on each node"
    emit_json slurm_conf "$CONF" partition "$PARTITION" cluster "$CLUSTER" nodes "json:[\"mnode1\", \"mnode2\", \"mnode3\"]" \
        netns "json:[\"cuberun-mn1\", \"cuberun-mn2\", \"cuberun-mn3\"]" jobcomp_log "$SL/jobcomp.log" \
        env "json:{\"SLURM_CONF\": \"$CONF\"}"
}

cmd_down() {
    ensure_state_dirs
    local node ns vr
    for node in "${NODES[@]}"; do
        stop_recorded "slurm-multi-$node" 15 slurmd "$CONF" "$node"
    done
    stop_recorded slurm-multi-ctld 20 slurmctld "$CONF"
    if [[ -n "$(recorded_pid slurm-multi-munged)" ]]; then
        stop_recorded slurm-multi-munged 10 munged
    fi
    if [[ -f "$SL/net/$ROOT_VETH.ours" ]]; then
        ip link del "$ROOT_VETH" 2>/dev/null || true
        rm -f "$SL/net/$ROOT_VETH.ours"
    fi
    local ns left
    for ns in "cuberun-mn1" "cuberun-mn2" "cuberun-mn3" "$CTL_NS" "$NET_NS"; do
        if [[ -f "$SL/net/$ns.ours" ]] && ns_exists "$ns"; then
            left="$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')"
            [[ -z "$left" ]] || log "warning: processes still in $ns (not stopped): $left"
            ip netns del "$ns"
        fi
        rm -f "$SL/net/$ns.ours"
    done
}

cmd_status() {
    [[ -f "$CONF" ]] || { log "not up (no $CONF)"; return 1; }
    ctld_up || { log "slurmctld does not answer"; return 1; }
    nodes_usable || { log "not every node is usable"; return 1; }
    log "up: $CLUSTER"
}

redirect_stdout_to_stderr
case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) die "usage: $0 up|down|status" ;;
esac
