#!/usr/bin/env bash
# Apptainer test backend: apptainer.sh build|up|down|status
#
# build  the Debian sid rootfs with apptainer (and HTCondor, for htcondor.sh), cached in
#        $CUBERUN_BACKENDS_CACHE/sid-rootfs (debootstrap minbase sid + apt-get install).
# up     build when needed; write $STATE/apptainer/bin/{apptainer,singularity}: executables that
#        run the real apptainer inside that rootfs (in-sid: unshare + pivot_root, the current
#        directory, /tmp and /var/tmp bound at the same paths); smoke: build a SIF from a
#        directory and exec it with --containall; print the details JSON.
#        The singularity runner does not know about this wrapper: tests point its `singularity`
#        setting at it, as a user points it at a real install.
# down   nothing runs between calls: nothing to stop.
# status exit 0 when `apptainer --version` works through the wrapper.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
LOG_TAG=apptainer
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
. "$HERE/lib.sh"
# shellcheck source=sidroot.sh
. "$HERE/sidroot.sh"

A="$STATE/apptainer"
BIN_DIR="$A/bin"

write_wrappers() {
    mkdir -p "$BIN_DIR"
    install -m 755 "$HERE/apptainer/in-sid" "$BIN_DIR/in-sid"
    local name
    for name in apptainer singularity; do
        write_if_changed "$BIN_DIR/$name" 755 <<W || true
#!/bin/sh
# Written by cuberun scripts/backends/apptainer.sh: the real $name of the sid rootfs.
exec "$BIN_DIR/in-sid" "$SID_ROOT" /usr/bin/$name "\$@"
W
    done
}

smoke() {
    local dir="$A/smoke" out
    rm -rf "$dir"
    mkdir -p "$dir/tree/bin" "$dir/tree/tmp" "$dir/tree/etc"
    cp "$SID_ROOT/bin/busybox" "$dir/tree/bin/busybox" 2>/dev/null || cp /bin/busybox "$dir/tree/bin/busybox"
    ln -sf busybox "$dir/tree/bin/sh"
    ln -sf busybox "$dir/tree/bin/echo"
    (cd "$dir" && timeout 120 "$BIN_DIR/apptainer" -s build smoke.sif tree/) >"$LOG_DIR/apptainer-smoke.log" 2>&1 || return 1
    out="$(cd "$dir" && timeout 60 "$BIN_DIR/apptainer" -s exec --containall smoke.sif /bin/echo cuberun-ok 2>>"$LOG_DIR/apptainer-smoke.log")" || return 1
    [[ "$out" == cuberun-ok ]]
}

cmd_build() {
    require_root
    ensure_state_dirs
    ensure_sid_rootfs
}

cmd_up() {
    require_root
    ensure_state_dirs
    apt_install busybox-static
    ensure_sid_rootfs
    write_wrappers
    smoke || { tail -n 20 "$LOG_DIR/apptainer-smoke.log" >&2 || true; die "apptainer smoke (build a SIF, exec --containall) failed (log: $LOG_DIR/apptainer-smoke.log)"; }
    local version
    version="$(sid_version apptainer)"
    log "ok: apptainer $version in $SID_ROOT"
    emit_json executable "$BIN_DIR/apptainer" singularity "$BIN_DIR/singularity" version "$version" \
        sid_root "$SID_ROOT" env 'json:{}'
}

cmd_down() {
    log "apptainer is daemonless; nothing to stop"
}

cmd_status() {
    [[ -x "$BIN_DIR/apptainer" ]] || { log "not up (no $BIN_DIR/apptainer)"; return 1; }
    timeout 60 "$BIN_DIR/apptainer" --version >&2 || { log "apptainer --version fails"; return 1; }
}

redirect_stdout_to_stderr
case "${1:-}" in
    build) cmd_build ;;
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) die "usage: $0 build|up|down|status" ;;
esac
