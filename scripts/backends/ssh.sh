#!/usr/bin/env bash
# SSH test backend: ssh.sh up|down|status
#
# up     install openssh-server + rsync; generate host and client keys under $STATE/ssh;
#        run our own sshd on 127.0.0.1:2222 (key only) and a second "host": sshd on
#        10.200.0.2:22 inside the network namespace cuberun-h2 (veth pair, root side
#        10.200.0.1/32); pinned known_hosts; client config $STATE/ssh/ssh_config with the
#        aliases cuberun-local and cuberun-h2. Reuses our sshds when they answer.
# down   stop only the sshd PIDs we recorded; delete the netns/veth only if we created them.
# status exit 0 when `ssh -F $STATE/ssh/ssh_config <alias> true` works for both aliases.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
LOG_TAG=ssh
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SSH_DIR="$STATE/ssh"
SSH_CONFIG="$SSH_DIR/ssh_config"
KNOWN_HOSTS="$SSH_DIR/known_hosts"
HOST_KEY="$SSH_DIR/ssh_host_ed25519_key"
CLIENT_KEY="$SSH_DIR/id_ed25519"
AUTH_KEYS="$SSH_DIR/authorized_keys"
CONF_LOCAL="$SSH_DIR/sshd_config"
CONF_H2="$SSH_DIR/sshd_config.h2"
PIDFILE_LOCAL="$SSH_DIR/sshd.2222.pid"
PIDFILE_H2="$SSH_DIR/sshd.h2.pid"
LOCAL_ADDR=127.0.0.1
LOCAL_PORT=2222
NETNS=cuberun-h2
VETH_ROOT=cr-h2-r   # interface names must be <= 15 characters
VETH_NS=cr-h2-n
ROOT_ADDR=10.200.0.1
H2_ADDR=10.200.0.2
SSHD=/usr/sbin/sshd
HOSTS=(cuberun-local cuberun-h2)

ssh_ok() {
    timeout 15 ssh -F "$SSH_CONFIG" "$1" true </dev/null >/dev/null 2>&1
}

ensure_keys() {
    mkdir -p "$SSH_DIR"
    chmod 700 "$SSH_DIR"
    if [[ ! -s "$HOST_KEY" || ! -s "$HOST_KEY.pub" ]]; then
        rm -f "$HOST_KEY" "$HOST_KEY.pub"
        ssh-keygen -q -t ed25519 -N '' -C cuberun-test-host -f "$HOST_KEY"
    fi
    if [[ ! -s "$CLIENT_KEY" || ! -s "$CLIENT_KEY.pub" ]]; then
        rm -f "$CLIENT_KEY" "$CLIENT_KEY.pub"
        ssh-keygen -q -t ed25519 -N '' -C cuberun-test-client -f "$CLIENT_KEY"
    fi
    write_if_changed "$AUTH_KEYS" 600 <"$CLIENT_KEY.pub" || true
}

# sshd_config_text LISTEN_ADDR PORT PIDFILE
sshd_config_text() {
    cat <<EOF
# Written by cuberun scripts/backends/ssh.sh
Port $2
ListenAddress $1
HostKey $HOST_KEY
PidFile $3
AuthorizedKeysFile $AUTH_KEYS
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
# keys live under /tmp (mode 1777)
StrictModes no
UseDNS no
# OpenSSH's default MaxStartups 10:30:100 drops parallel connections
MaxStartups 64:30:128
MaxSessions 64
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
}

# write_configs: sets CHANGED_LOCAL / CHANGED_H2 to 1 when an sshd config changed.
write_configs() {
    local hostpub
    hostpub="$(awk '{ print $1 " " $2 }' "$HOST_KEY.pub")"
    CHANGED_LOCAL=0
    CHANGED_H2=0
    if sshd_config_text "$LOCAL_ADDR" "$LOCAL_PORT" "$PIDFILE_LOCAL" | write_if_changed "$CONF_LOCAL" 600; then
        CHANGED_LOCAL=1
    fi
    if sshd_config_text "$H2_ADDR" 22 "$PIDFILE_H2" | write_if_changed "$CONF_H2" 600; then
        CHANGED_H2=1
    fi
    printf '[%s]:%s %s\n%s %s\n' "$LOCAL_ADDR" "$LOCAL_PORT" "$hostpub" "$H2_ADDR" "$hostpub" |
        write_if_changed "$KNOWN_HOSTS" 600 || true
    write_if_changed "$SSH_CONFIG" 600 <<EOF || true
# Written by cuberun scripts/backends/ssh.sh. Use: ssh -F $SSH_CONFIG cuberun-local CMD
Host cuberun-local
    HostName $LOCAL_ADDR
    Port $LOCAL_PORT

Host cuberun-h2
    HostName $H2_ADDR
    Port 22

Host cuberun-local cuberun-h2
    User root
    IdentityFile $CLIENT_KEY
    IdentitiesOnly yes
    UserKnownHostsFile $KNOWN_HOSTS
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    UpdateHostKeys no
    BatchMode yes
    ConnectTimeout 5
    LogLevel ERROR
EOF
    "$SSHD" -t -f "$CONF_LOCAL" || die "sshd -t rejected $CONF_LOCAL"
    "$SSHD" -t -f "$CONF_H2" || die "sshd -t rejected $CONF_H2"
}

# UsePAM no makes sshd refuse accounts whose password field starts with '!'.
ensure_root_unlocked() {
    local pw
    pw="$(getent shadow root | cut -d: -f2)"
    if [[ "$pw" == '!'* ]]; then
        log "root's account is locked ('!'); setting its password field to '*' (no password)"
        usermod -p '*' root
    fi
}

# ensure_sshd NAME CONF PIDFILE ALIAS CHANGED LAUNCH...
# Reuse our sshd when it answers (and its config did not change); otherwise (re)start it.
ensure_sshd() {
    local name=$1 conf=$2 pidfile=$3 alias=$4 changed=$5 pid daemon_pid
    shift 5
    pid="$(recorded_pid "$name")"
    if [[ -n "$pid" ]] && pid_matches "$pid" sshd "$conf"; then
        if [[ "$changed" == 0 ]] && ssh_ok "$alias"; then
            log "our $name (pid $pid) answers; reusing it"
            return 0
        fi
        log "restarting our $name (pid $pid): config changed or not answering"
        stop_recorded "$name" 10 sshd "$conf"
    elif [[ "$changed" == 0 ]] && ssh_ok "$alias"; then
        log "an sshd with our host key already answers as $alias (not started by this run); reusing it"
        return 0
    fi
    forget_pid "$name"
    rm -f "$pidfile"
    setsid nohup "$@" </dev/null >/dev/null 2>&1 &
    pid=$!
    record_pid "$name" "$pid"
    if ! wait_until 15 0.1 "$alias to accept ssh" ssh_ok "$alias"; then
        tail -n 20 "$SSH_DIR/$name.log" >&2 2>/dev/null || true
        stop_recorded "$name" 10 sshd "$conf" || true
        die "$name did not accept ssh within 15s (log: $SSH_DIR/$name.log)"
    fi
    daemon_pid="$(read_pidfile "$pidfile")"
    if [[ -n "$daemon_pid" && "$daemon_pid" != "$pid" ]] && pid_matches "$daemon_pid" sshd "$conf"; then
        record_pid "$name" "$daemon_pid"
        pid=$daemon_pid
    fi
    log "$name up (pid $pid)"
}

port_taken_by_other() {
    local pid
    pid="$(recorded_pid sshd-local)"
    if ! ss -ltnH "sport = :$LOCAL_PORT" | grep -q .; then
        return 1
    fi
    # Listening: fine if it is our recorded sshd.
    if [[ -n "$pid" ]] && pid_matches "$pid" sshd "$CONF_LOCAL"; then
        return 1
    fi
    ssh_ok cuberun-local && return 1
    return 0
}

netns_exists() {
    ip netns list | awk '{ print $1 }' | grep -qx "$NETNS"
}

ensure_netns() {
    local conflict
    conflict="$(ip -4 route show match "$H2_ADDR" | awk -v dev="$VETH_ROOT" '$1 != "default" && $0 !~ (" dev " dev "( |$)")')"
    if [[ -n "$conflict" ]]; then
        die "a route to $H2_ADDR that is not ours exists ($conflict); refusing to touch it"
    fi
    if ! netns_exists; then
        log "creating network namespace $NETNS"
        ip netns add "$NETNS"
        touch "$SSH_DIR/netns.ours"
    fi
    if ! ip link show "$VETH_ROOT" >/dev/null 2>&1; then
        ip netns exec "$NETNS" ip link del "$VETH_NS" >/dev/null 2>&1 || true
        log "creating veth $VETH_ROOT <-> $NETNS:$VETH_NS"
        ip link add "$VETH_ROOT" type veth peer name "$VETH_NS"
        ip link set "$VETH_NS" netns "$NETNS"
        touch "$SSH_DIR/veth.ours"
    fi
    ip addr replace "$ROOT_ADDR/32" dev "$VETH_ROOT"
    ip link set "$VETH_ROOT" up
    ip route replace "$H2_ADDR/32" dev "$VETH_ROOT" src "$ROOT_ADDR"
    ip netns exec "$NETNS" ip link set lo up
    ip netns exec "$NETNS" ip addr replace "$H2_ADDR/24" dev "$VETH_NS"
    ip netns exec "$NETNS" ip link set "$VETH_NS" up
}

cmd_up() {
    require_root
    ensure_state_dirs
    apt_install openssh-server openssh-client rsync
    mkdir -p /run/sshd
    chmod 755 /run/sshd
    ensure_keys
    write_configs
    ensure_root_unlocked

    if port_taken_by_other; then
        die "$LOCAL_ADDR:$LOCAL_PORT is taken by something that is not our sshd"
    fi
    ensure_sshd sshd-local "$CONF_LOCAL" "$PIDFILE_LOCAL" cuberun-local "$CHANGED_LOCAL" \
        "$SSHD" -D -f "$CONF_LOCAL" -E "$SSH_DIR/sshd-local.log"

    ensure_netns
    # `ip netns exec` execs in place, so $! is sshd's own PID.
    ensure_sshd sshd-h2 "$CONF_H2" "$PIDFILE_H2" cuberun-h2 "$CHANGED_H2" \
        ip netns exec "$NETNS" "$SSHD" -D -f "$CONF_H2" -E "$SSH_DIR/sshd-h2.log"

    log "ok: ssh -F $SSH_CONFIG {cuberun-local,cuberun-h2} true"
    emit_json ssh_config "$SSH_CONFIG" hosts "json:[\"${HOSTS[0]}\", \"${HOSTS[1]}\"]" \
        state "$SSH_DIR" identity_file "$CLIENT_KEY" known_hosts "$KNOWN_HOSTS" \
        local_addr "$LOCAL_ADDR:$LOCAL_PORT" h2_addr "$H2_ADDR:22" netns "$NETNS" env 'json:{}'
}

cmd_down() {
    ensure_state_dirs
    stop_recorded sshd-h2 10 sshd "$CONF_H2"
    stop_recorded sshd-local 10 sshd "$CONF_LOCAL"
    if [[ -f "$SSH_DIR/veth.ours" ]]; then
        if ip link show "$VETH_ROOT" >/dev/null 2>&1; then
            log "deleting veth $VETH_ROOT"
            ip link del "$VETH_ROOT"
        fi
        rm -f "$SSH_DIR/veth.ours"
    fi
    if [[ -f "$SSH_DIR/netns.ours" ]]; then
        if netns_exists; then
            local left
            left="$(ip netns pids "$NETNS" 2>/dev/null | tr '\n' ' ')"
            if [[ -n "$left" ]]; then
                log "warning: processes still in $NETNS (not ours to kill): $left"
            fi
            log "deleting network namespace $NETNS"
            ip netns del "$NETNS"
        fi
        rm -f "$SSH_DIR/netns.ours"
    fi
}

cmd_status() {
    local rc=0 alias
    if [[ ! -f "$SSH_CONFIG" ]]; then
        log "not up (no $SSH_CONFIG)"
        return 1
    fi
    for alias in "${HOSTS[@]}"; do
        if ssh_ok "$alias"; then
            log "up: $alias"
        else
            log "down: $alias"
            rc=1
        fi
    done
    return "$rc"
}

redirect_stdout_to_stderr
case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) die "usage: $0 up|down|status" ;;
esac
