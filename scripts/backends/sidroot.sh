# shellcheck shell=bash
# A Debian sid root filesystem holding Apptainer and HTCondor, which Debian ships only in sid
# (their binaries need sid's glibc). Source it after lib.sh; used by apptainer.sh and
# htcondor.sh.
#
# The rootfs is built once with debootstrap (minbase) and cached in $CACHE_DIR/sid-rootfs.
# It is entered with unshare (mount + pid namespaces) and pivot_root: Apptainer refuses a plain
# chroot ("Running inside a weak chrooted environment").

SID_ROOT="$CACHE_DIR/sid-rootfs"
SID_PACKAGES=(apptainer minicondor condor)
SID_REV=1  # bump when the build steps change

sid_key() {
    printf 'sid rev %s: %s\n' "$SID_REV" "${SID_PACKAGES[*]}"
}

sid_ready() {
    cache_valid "$SID_ROOT" "$(sid_key)" && [[ -x "$SID_ROOT/usr/bin/apptainer" ]]
}

_sid_build() {
    if sid_ready; then
        return 0
    fi
    local partial="$CACHE_DIR/sid-rootfs.partial" mirror start
    apt_install debootstrap ca-certificates
    mirror="$(debian_mirror)"
    cache_rm_tree "$partial"
    start=$SECONDS
    log "debootstrap --variant=minbase sid into $partial (takes minutes)"
    if ! debootstrap --variant=minbase sid "$partial" "$mirror" >"$LOG_DIR/sid-debootstrap.log" 2>&1; then
        tail -n 20 "$LOG_DIR/sid-debootstrap.log" >&2 || true
        cache_rm_tree "$partial"
        die "debootstrap sid failed (log: $LOG_DIR/sid-debootstrap.log)"
    fi
    log "debootstrap sid done in $(( SECONDS - start ))s; installing ${SID_PACKAGES[*]}"
    printf '#!/bin/sh\nexit 101\n' >"$partial/usr/sbin/policy-rc.d"
    chmod +x "$partial/usr/sbin/policy-rc.d"
    cp /etc/resolv.conf "$partial/etc/resolv.conf"
    mkdir -p "$partial/usr/local/share/ca-certificates"
    cp -f /usr/local/share/ca-certificates/*.crt "$partial/usr/local/share/ca-certificates/" 2>/dev/null || true
    # sid's Release file counts as expired for this mirror: Check-Valid-Until=false
    if ! unshare --mount --fork bash -c '
        set -e
        mount -t proc proc "$1/proc"
        chroot "$1" apt-get -o Acquire::Check-Valid-Until=false -q update
        chroot "$1" env DEBIAN_FRONTEND=noninteractive apt-get -o Acquire::Check-Valid-Until=false -y -q \
            install --no-install-recommends "${@:2}"
        chroot "$1" apt-get clean
    ' bash "$partial" "${SID_PACKAGES[@]}" >"$LOG_DIR/sid-apt.log" 2>&1; then
        tail -n 20 "$LOG_DIR/sid-apt.log" >&2 || true
        cache_rm_tree "$partial"
        die "apt-get install ${SID_PACKAGES[*]} in the sid rootfs failed (log: $LOG_DIR/sid-apt.log)"
    fi
    # root lacks CAP_SYS_RESOURCE here: root containers get file capabilities, not "full"
    sed -i 's/^root default capabilities = full/root default capabilities = file/' "$partial/etc/apptainer/apptainer.conf"
    : >"$partial/etc/resolv.conf"
    mkdir -p "$partial/.oldroot"
    chroot "$partial" useradd -m -u 4242 cuberun-submit 2>/dev/null || true
    cache_rm_tree "$SID_ROOT"
    mv "$partial" "$SID_ROOT"
    cache_seal "$SID_ROOT" "$(sid_key)"
    log "sid rootfs ready in $SID_ROOT ($(( SECONDS - start ))s): $(sid_versions)"
}

ensure_sid_rootfs() {
    mkdir -p "$CACHE_DIR"
    with_lock "$CACHE_DIR/sid-rootfs.lock" 1800 _sid_build
}

# sid_versions: "apptainer X, condor Y" as installed in the rootfs.
sid_versions() {
    local p out=()
    for p in apptainer condor; do
        out+=("$p $(chroot "$SID_ROOT" dpkg-query -W -f='${Version}' "$p" 2>/dev/null || echo '?')")
    done
    local IFS=,
    printf '%s\n' "${out[*]}"
}

# sid_version PKG: the installed version of one package in the rootfs.
sid_version() {
    chroot "$SID_ROOT" dpkg-query -W -f='${Version}' "$1" 2>/dev/null
}
