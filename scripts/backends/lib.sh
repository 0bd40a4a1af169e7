# shellcheck shell=bash
# Shared helpers for the scripts that install and start the REAL test backends.
# Source it; do not run it. Every backend script does:
#     . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Rules these helpers implement (see docs/conventions.md and the backend reference):
#   - every wait loop is bounded in time and in iterations;
#   - we only ever stop PIDs we recorded, after checking /proc/PID/cmdline;
#   - all logging goes to stderr; a backend's `up` prints exactly one JSON
#     object (its details for backends.json) on the original stdout (fd 3).

if [[ -n "${_CUBERUN_BACKENDS_LIB:-}" ]]; then
    return 0
fi
_CUBERUN_BACKENDS_LIB=1

STATE="${CUBERUN_TEST_STATE:-/tmp/cuberun-test-state}"
# shellcheck disable=SC2034  # used by the backend scripts
BASE_IMAGE="localhost/cuberun-base:bookworm"
ROOTFS="$STATE/rootfs"
ROOTFS_MARKER=".cuberun-rootfs-complete"
PID_DIR="$STATE/pids"
LOG_DIR="$STATE/logs"
LOG_TAG="${LOG_TAG:-backends}"

# A plain system interpreter for small JSON jobs (pyenv shims are slow and may vary).
if [[ -x /usr/bin/python3 ]]; then
    PY=/usr/bin/python3
else
    PY=python3
fi

export DEBIAN_FRONTEND=noninteractive
export NEEDRESTART_SUSPEND=1

# ---------------------------------------------------------------- logging

log() {
    printf '%s %s: %s\n' "$(date +%H:%M:%S)" "$LOG_TAG" "$*" >&2
}

# Print an "ERROR:" line (up.sh takes the last one as the failure reason) and exit 1.
die() {
    printf '%s %s: ERROR: %s\n' "$(date +%H:%M:%S)" "$LOG_TAG" "$*" >&2
    exit 1
}

# Move stdout to fd 3 and send everything else (apt, debootstrap, daemons' chatter)
# to stderr, so that `up` can print its JSON details on a clean stdout.
redirect_stdout_to_stderr() {
    exec 3>&1 1>&2
}

ensure_state_dirs() {
    mkdir -p "$STATE" "$PID_DIR" "$LOG_DIR"
    chmod 755 "$STATE"
}

require_root() {
    if [[ "$(id -u)" -ne 0 ]]; then
        die "must run as root (installs packages and starts daemons)"
    fi
}

# now_ms: wall clock in milliseconds.
now_ms() {
    date +%s%3N
}

# ---------------------------------------------------------------- apt

_apt_get() {
    apt-get -o DPkg::Lock::Timeout=600 -y -q "$@"
}

apt_update() {
    log "apt-get update"
    _apt_get update
}

# pkg_installed PKG: true when dpkg has PKG fully installed.
pkg_installed() {
    local status
    status="$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" || return 1
    [[ "$status" == "installed" ]]
}

# apt_install PKG...: install the packages that are missing. `apt-get update` runs only
# when the package lists are empty, or once more when an install fails (stale lists).
apt_install() {
    local missing=() pkg
    for pkg in "$@"; do
        pkg_installed "$pkg" || missing+=("$pkg")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        return 0
    fi
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        apt_update
    fi
    log "apt-get install ${missing[*]}"
    if ! _apt_get install "${missing[@]}"; then
        log "install failed; refreshing package lists and retrying once"
        apt_update
        _apt_get install "${missing[@]}"
    fi
}

# ---------------------------------------------------------------- polling

# wait_until TIMEOUT_S INTERVAL_S DESCRIPTION CMD [ARGS...]
# Runs CMD (output discarded) until it succeeds. Bounded by a wall-clock deadline AND
# by an iteration cap derived from it. Returns 1 (after logging) when time runs out.
wait_until() {
    local timeout_s=$1 interval_s=$2 desc=$3
    shift 3
    local interval_ms deadline max_iter i=0
    interval_ms="$(awk -v s="$interval_s" 'BEGIN { v = int(s * 1000); if (v < 10) v = 10; print v }')"
    deadline=$(( $(now_ms) + timeout_s * 1000 ))
    max_iter=$(( timeout_s * 1000 / interval_ms + 2 ))
    while (( i < max_iter )); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        i=$(( i + 1 ))
        if (( $(now_ms) >= deadline )); then
            break
        fi
        sleep "$interval_s"
    done
    log "gave up waiting for: $desc (${timeout_s}s)"
    return 1
}

# ---------------------------------------------------------------- processes

# pid_alive PID: the process exists and is not a zombie.
pid_alive() {
    local pid=$1 state
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/stat" ]] || return 1
    state="$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$pid/stat" 2>/dev/null)" || return 1
    [[ -n "$state" && "$state" != "Z" && "$state" != "X" ]]
}

# pid_cmdline PID: the command line with NULs turned into spaces.
pid_cmdline() {
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null
}

# pid_matches PID PATTERN...: alive, and its cmdline contains every PATTERN (fixed strings).
pid_matches() {
    local pid=$1 cmdline pattern
    shift
    pid_alive "$pid" || return 1
    cmdline="$(pid_cmdline "$pid")" || return 1
    [[ -n "$cmdline" ]] || return 1
    for pattern in "$@"; do
        [[ "$cmdline" == *"$pattern"* ]] || return 1
    done
    return 0
}

_pid_not_matching() {
    ! pid_matches "$@"
}

# stop_pid PID TIMEOUT_S PATTERN...: stop PID only if its cmdline still matches every
# PATTERN (guards against PID reuse): SIGTERM, bounded wait, then SIGKILL.
stop_pid() {
    local pid=$1 timeout_s=$2
    shift 2
    if ! pid_matches "$pid" "$@"; then
        log "pid ${pid:-?} is gone or no longer ours; nothing to stop"
        return 0
    fi
    log "stopping pid $pid ($(pid_cmdline "$pid" | cut -c1-100))"
    kill -TERM "$pid" 2>/dev/null || return 0
    if wait_until "$timeout_s" 0.2 "pid $pid to exit after SIGTERM" _pid_not_matching "$pid" "$@"; then
        return 0
    fi
    if pid_matches "$pid" "$@"; then
        log "pid $pid ignored SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait_until 5 0.1 "pid $pid to exit after SIGKILL" _pid_not_matching "$pid" "$@"
}

# record_pid NAME PID: remember that we started PID (file $PID_DIR/NAME.pid).
record_pid() {
    mkdir -p "$PID_DIR"
    printf '%s\n' "$2" >"$PID_DIR/$1.pid"
}

# recorded_pid NAME: print the recorded PID (empty when none).
recorded_pid() {
    local f="$PID_DIR/$1.pid"
    if [[ -r "$f" ]]; then
        head -n1 "$f" | tr -dc '0-9'
    fi
}

forget_pid() {
    rm -f "$PID_DIR/$1.pid"
}

# stop_recorded NAME TIMEOUT_S PATTERN...: stop the PID recorded under NAME (if it still
# matches) and forget it.
stop_recorded() {
    local name=$1 timeout_s=$2 pid
    shift 2
    pid="$(recorded_pid "$name")"
    if [[ -n "$pid" ]]; then
        stop_pid "$pid" "$timeout_s" "$@" || return 1
    fi
    forget_pid "$name"
}

# read_pidfile FILE: print the PID in a daemon's own pid file (empty when none).
read_pidfile() {
    if [[ -r "$1" ]]; then
        head -n1 "$1" | tr -dc '0-9'
    fi
}

# ---------------------------------------------------------------- ports

# reserve_ports RANGE...: keep these loopback ports out of the kernel's automatic (ephemeral)
# port choice in this network namespace. This machine's ephemeral range is 1024-65535, so any
# outgoing connection or bind(0) may otherwise take a port a backend is about to listen on
# (Backend.AI's kernels bind host ports 31000-31500 one per session: a client socket that held
# one made a session fail with "Address already in use"). Merged with what is reserved already.
reserve_ports() {
    local file=/proc/sys/net/ipv4/ip_local_reserved_ports current want r
    [[ -w "$file" ]] || { log "note: cannot reserve ports $* ($file is not writable)"; return 0; }
    current="$(cat "$file")"
    want="$current"
    for r in "$@"; do
        case ",$current," in *",$r,"*) ;; *) want="${want:+$want,}$r" ;; esac
    done
    if [[ "$want" != "$current" ]]; then
        printf '%s\n' "$want" >"$file" || die "could not reserve ports $* in $file"
        log "reserved ports $* (kept out of automatic port choice)"
    fi
}

# ---------------------------------------------------------------- files

# write_if_changed FILE MODE: write stdin to FILE when the content differs.
# Returns 0 when the file was (re)written, 1 when it was already up to date.
write_if_changed() {
    local file=$1 mode=$2 tmp
    tmp="$(mktemp "${file}.XXXXXX")"
    cat >"$tmp"
    chmod "$mode" "$tmp"
    if [[ -f "$file" ]] && cmp -s "$tmp" "$file"; then
        rm -f "$tmp"
        chmod "$mode" "$file"
        return 1
    fi
    mv -f "$tmp" "$file"
    return 0
}

# safe_rm_tree DIR: unmount anything left mounted below DIR (an interrupted debootstrap
# leaves /proc and /sys mounted there), then delete it without crossing file systems.
safe_rm_tree() {
    local dir=$1 mnt m i
    [[ -e "$dir" ]] || return 0
    dir="$(realpath -e "$dir")"
    case "$dir" in
        "$STATE"/?*) ;;
        *) die "refusing to delete $dir (outside $STATE)" ;;
    esac
    for i in 1 2 3; do
        mnt="$(awk -v d="$dir" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/self/mounts | sort -r)"
        [[ -n "$mnt" ]] || break
        while IFS= read -r m; do
            log "unmounting leftover $m (pass $i)"
            umount -l "$m" 2>/dev/null || true
        done <<<"$mnt"
    done
    rm -rf --one-file-system -- "$dir"
}

# emit_json KEY VALUE ...: print one JSON object on fd 3 (the original stdout).
# A VALUE written as "json:<text>" is inserted as raw JSON (lists, booleans, objects).
emit_json() {
    "$PY" - "$@" >&3 <<'EOF'
import json, sys
args = sys.argv[1:]
out = {}
for key, value in zip(args[::2], args[1::2]):
    out[key] = json.loads(value[5:]) if value.startswith("json:") else value
print(json.dumps(out, sort_keys=True))
EOF
}

# ---------------------------------------------------------------- base rootfs

# debian_mirror: the main archive URI from the host's apt sources (deb822 first).
debian_mirror() {
    local uri=""
    if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
        uri="$(awk 'BEGIN { RS = ""; FS = "\n" }
            {
                u = ""; main = 0
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^URIs:/) { u = $i; sub(/^URIs:[ \t]*/, "", u); sub(/[ \t].*$/, "", u) }
                    if ($i ~ /^Suites:/ && $i ~ /[ \t]bookworm([ \t]|$)/) main = 1
                }
                if (main && u != "") { print u; exit }
            }' /etc/apt/sources.list.d/debian.sources)"
    fi
    if [[ -z "$uri" && -r /etc/apt/sources.list ]]; then
        uri="$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list)"
    fi
    printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}

rootfs_ready() {
    [[ -f "$ROOTFS/$ROOTFS_MARKER" && -x "$ROOTFS/usr/bin/python3" ]]
}

# ensure_rootfs: build $ROOTFS with debootstrap (minbase + Python) unless a complete one
# exists. Built in a side directory and renamed, with a marker written last, so a
# half-built rootfs is never used. Serialized with a lock (docker.sh and charliecloud.sh
# both call it).
ensure_rootfs() {
    ensure_state_dirs
    if rootfs_ready; then
        return 0
    fi
    exec 9>"$STATE/rootfs.lock"
    if ! flock -w 900 9; then
        die "timed out waiting for the rootfs lock $STATE/rootfs.lock"
    fi
    if rootfs_ready; then
        exec 9>&-
        return 0
    fi
    apt_install debootstrap ca-certificates
    local partial="$STATE/rootfs.partial" mirror start crt
    mirror="$(debian_mirror)"
    if [[ -e "$ROOTFS" ]]; then
        log "removing incomplete rootfs $ROOTFS"
        safe_rm_tree "$ROOTFS"
    fi
    safe_rm_tree "$partial"
    start=$SECONDS
    log "debootstrap bookworm (minbase + python3) from $mirror into $partial (takes minutes)"
    if ! debootstrap --variant=minbase \
        --include=python3,python3-pip,python3-venv,python3-numpy,python3-yaml,ca-certificates \
        bookworm "$partial" "$mirror" >"$LOG_DIR/debootstrap.log" 2>&1; then
        tail -n 20 "$LOG_DIR/debootstrap.log" >&2 || true
        safe_rm_tree "$partial"
        die "debootstrap failed (log: $LOG_DIR/debootstrap.log)"
    fi
    log "debootstrap done in $(( SECONDS - start ))s; adding host CAs and pip.conf"
    mkdir -p "$partial/usr/local/share/ca-certificates"
    for crt in /usr/local/share/ca-certificates/*.crt; do
        [[ -e "$crt" ]] || continue
        cp -f "$crt" "$partial/usr/local/share/ca-certificates/"
    done
    chroot "$partial" /usr/sbin/update-ca-certificates >/dev/null
    printf '[global]\nbreak-system-packages = true\ndisable-pip-version-check = true\nroot-user-action = ignore\n' \
        >"$partial/etc/pip.conf"
    rm -rf "$partial"/var/cache/apt/archives/*.deb "$partial"/var/cache/apt/*.bin
    find "$partial/var/lib/apt/lists" -mindepth 1 -maxdepth 1 -type f -delete
    : >"$partial/etc/resolv.conf"
    date -u +%Y-%m-%dT%H:%M:%SZ >"$partial/$ROOTFS_MARKER"
    mv "$partial" "$ROOTFS"
    log "rootfs ready at $ROOTFS ($(( SECONDS - start ))s)"
    exec 9>&-
}

# rootfs_tar: stream the rootfs as a tar archive on stdout (marker excluded).
rootfs_tar() {
    tar -C "$ROOTFS" --exclude="./$ROOTFS_MARKER" --numeric-owner -c .
}

# Image metadata shared by the docker and podman imports.
# shellcheck disable=SC2034  # used by docker.sh and podman.sh
IMPORT_CHANGES=(
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
    --change 'ENV LANG=C.UTF-8'
    --change 'ENV PYTHONUNBUFFERED=1'
    --change 'CMD ["python3"]'
)

# ---------------------------------------------------------------- build caches

# Build caches live OUTSIDE the repository and outside $STATE, so a new clone (CI) and a
# `down` keep them: Kubernetes binaries, the sid rootfs, the Backend.AI venv. Each cached
# item is built in "<dir>.partial" and renamed when complete, with a key file written last;
# a directory without the right key is rebuilt.
CACHE_DIR="${CUBERUN_BACKENDS_CACHE:-/var/cache/cuberun-backends}"

# cache_valid DIR KEY: DIR holds a complete build made for KEY.
cache_valid() {
    [[ -f "$1/.cuberun-cache-key" && "$(cat "$1/.cuberun-cache-key" 2>/dev/null)" == "$2" ]]
}

# cache_seal DIR KEY: mark DIR complete for KEY (the last step of a build).
cache_seal() {
    printf '%s\n' "$2" >"$1/.cuberun-cache-key"
}

# cache_rm_tree DIR: like safe_rm_tree, for directories under $CACHE_DIR.
cache_rm_tree() {
    local dir=$1 mnt m
    [[ -e "$dir" ]] || return 0
    dir="$(realpath -e "$dir")"
    case "$dir" in
        "$CACHE_DIR"/?* | "$STATE"/?*) ;;
        *) die "refusing to delete $dir (outside $CACHE_DIR and $STATE)" ;;
    esac
    mnt="$(awk -v d="$dir" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/self/mounts | sort -r)"
    if [[ -n "$mnt" ]]; then
        while IFS= read -r m; do
            umount -l "$m" 2>/dev/null || true
        done <<<"$mnt"
    fi
    rm -rf --one-file-system -- "$dir"
}

# with_lock FILE TIMEOUT_S CMD...: run CMD holding an exclusive flock on FILE.
with_lock() {
    local file=$1 timeout_s=$2
    shift 2
    mkdir -p "$(dirname "$file")"
    (
        flock -w "$timeout_s" 9 || die "timed out after ${timeout_s}s waiting for the lock $file"
        "$@"
    ) 9>"$file"
}

# sha256_of FILE...: one hash over the contents of the files (a cache key part).
sha256_of() {
    cat "$@" | sha256sum | cut -c1-16
}

# fetch_verified URL FILE SHA256: download URL to FILE (kept when it already matches).
fetch_verified() {
    local url=$1 file=$2 sum=$3
    if [[ -f "$file" ]] && echo "$sum  $file" | sha256sum -c --quiet - >/dev/null 2>&1; then
        return 0
    fi
    log "downloading $url"
    curl -fsSL --retry 3 -o "$file.part" "$url" || die "download failed: $url"
    if ! echo "$sum  $file.part" | sha256sum -c --quiet - >/dev/null 2>&1; then
        rm -f "$file.part"
        die "checksum mismatch for $url (expected sha256 $sum)"
    fi
    mv -f "$file.part" "$file"
}

# stop_private_dockerd NAME SOCK EXEC_ROOT: stop a private dockerd recorded as NAME (and its
# containerd child recorded as NAME-containerd), by PID only.
stop_private_dockerd() {
    local name=$1 sock=$2 exec_root=$3
    stop_recorded "$name" 30 dockerd "$sock"
    stop_recorded "$name-containerd" 10 containerd "$exec_root"
}

# start_private_dockerd NAME DIR [EXTRA DOCKERD ARGS...]: a dockerd of our own with its socket,
# data and exec roots under DIR (no bridge, no iptables), recorded as NAME. Reused when it
# already answers. Sets PRIVATE_DOCKER_HOST.
start_private_dockerd() {
    local name=$1 dir=$2 pid daemon_pid child
    shift 2
    local sock="$dir/docker.sock" exec_root="$dir/docker-exec"
    PRIVATE_DOCKER_HOST="unix://$sock"
    pid="$(recorded_pid "$name")"
    if [[ -n "$pid" ]] && pid_matches "$pid" dockerd "$sock"; then
        if wait_until 60 0.5 "$name to answer" env DOCKER_HOST="$PRIVATE_DOCKER_HOST" timeout 20 docker info; then
            log "our $name (pid $pid) answers; reusing it"
            return 0
        fi
        stop_private_dockerd "$name" "$sock" "$exec_root"
    fi
    mkdir -p "$dir/docker-data" "$exec_root"
    daemon_pid="$(read_pidfile "$exec_root/docker.pid")"
    if [[ -n "$daemon_pid" ]] && pid_matches "$daemon_pid" dockerd "$sock"; then
        die "an unrecorded dockerd (pid $daemon_pid) owns $sock; stop it first"
    fi
    rm -f "$exec_root/docker.pid" "$sock"
    log "starting $name on $PRIVATE_DOCKER_HOST"
    setsid nohup /usr/sbin/dockerd --bridge=none --iptables=false --ip-masq=false --ip6tables=false \
        -H "$PRIVATE_DOCKER_HOST" --data-root "$dir/docker-data" --exec-root "$exec_root" \
        --pidfile "$exec_root/docker.pid" "$@" </dev/null >>"$LOG_DIR/$name.log" 2>&1 3>&- &
    pid=$!
    record_pid "$name" "$pid"
    if ! wait_until 90 0.5 "$name on $PRIVATE_DOCKER_HOST" env DOCKER_HOST="$PRIVATE_DOCKER_HOST" timeout 20 docker info; then
        tail -n 20 "$LOG_DIR/$name.log" >&2 || true
        stop_private_dockerd "$name" "$sock" "$exec_root" || true
        die "$name did not answer within 90s (log: $LOG_DIR/$name.log)"
    fi
    for child in $(ps -o pid= --ppid "$pid" 2>/dev/null); do
        if pid_matches "$child" containerd "$exec_root"; then
            record_pid "$name-containerd" "$child"
        fi
    done
    log "$name up (pid $pid)"
}

# session_members SID: the PIDs of the live processes in session SID (a daemon started with
# setsid is its session's leader; its workers and helpers stay in the session).
session_members() {
    ps -eo pid=,sid= | awk -v s="$1" '$2 == s { print $1 }'
}

# session_matches SID PATTERN: some live member's cmdline contains PATTERN.
session_matches() {
    local sid=$1 pattern=$2 pid
    [[ "$sid" =~ ^[0-9]+$ ]] || return 1
    for pid in $(session_members "$sid"); do
        if pid_matches "$pid" "$pattern"; then
            return 0
        fi
    done
    return 1
}

_session_gone() {
    [[ -z "$(session_members "$1")" ]]
}

# stop_session NAME TIMEOUT_S PATTERN: stop every process of the session recorded as NAME (for
# daemons that rename themselves or fork workers), only when a member still shows PATTERN:
# SIGTERM to the session's members, bounded wait, then SIGKILL; then forget NAME.
stop_session() {
    local name=$1 timeout_s=$2 pattern=$3 sid pid
    sid="$(recorded_pid "$name")"
    if [[ -n "$sid" ]] && session_matches "$sid" "$pattern"; then
        log "stopping session $sid ($name)"
        for pid in $(session_members "$sid"); do kill -TERM "$pid" 2>/dev/null || true; done
        if ! wait_until "$timeout_s" 0.3 "session $sid to end" _session_gone "$sid"; then
            for pid in $(session_members "$sid"); do kill -KILL "$pid" 2>/dev/null || true; done
            wait_until 10 0.2 "session $sid to end after SIGKILL" _session_gone "$sid" || true
        fi
    fi
    forget_pid "$name"
}
