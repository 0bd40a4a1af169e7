#!/usr/bin/env bash
# Bring up the real test backends: up.sh [NAME...] (default: all of ALL below, in that order).
# Idempotent: running backends are reused.
#
# Cold start: the long builds (Kubernetes from source, the sid rootfs for Apptainer/HTCondor,
# the Backend.AI venv) are started first in the background, so that they overlap with each
# other and with the quick backends; each backend's own `up` then waits for its build through
# the build's lock (and redoes it if the background build failed). Caches valid: no build runs.
#
# Writes $CUBERUN_TEST_STATE/backends.json (default /tmp/cuberun-test-state), one entry per
# backend: {"ok": true|false, "reason": "...", ...details}. Entries of backends not named
# on the command line are kept. A backend that fails is recorded with ok=false and the
# last ERROR line of its log as the reason; the others still run; exit status 1 if any
# failed. Logs: $STATE/logs/<name>.up.log.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_TAG=up
# shellcheck source=lib.sh
. "$DIR/lib.sh"

ALL=(docker podman ssh slurm charliecloud registry apptainer htcondor gpu slurm-multi backendai k8s)
# backends whose script has a `build` step worth starting early: name -> script
BUILDS=(k8s apptainer backendai)
PER_BACKEND_TIMEOUT=3600  # a cold Kubernetes build on 2 busy cores took 35 min

names=("$@")
if [[ ${#names[@]} -eq 0 ]]; then
    names=("${ALL[@]}")
fi
for name in "${names[@]}"; do
    [[ " ${ALL[*]} " == *" $name "* ]] || die "unknown backend '$name' (known: ${ALL[*]})"
done
require_root
ensure_state_dirs
# the backends' fixed loopback ports (sshd 2222, Kubernetes' etcd 12379-12381, registry 15000, Slurm, HTCondor, Kubernetes and
# Backend.AI daemons in 15000-21000, Backend.AI's kernel pool and monitors): never handed out as
# an ephemeral port here, where the ephemeral range may be 1024-65535 (see lib.sh reserve_ports)
reserve_ports 2222 12379-12381 15000-21000 31000-31500 48100-48140

work="$(mktemp -d "$STATE/.up.XXXXXX")"
build_pids=()
cleanup() {
    local pid
    for pid in "${build_pids[@]}"; do
        # a background build still running when up.sh ends (failure, timeout): stop it
        if pid_alive "$pid"; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    rm -rf "$work"
}
trap cleanup EXIT

# a fresh machine has empty package lists: refresh them once here, before the background builds
# and the backends install packages side by side (concurrent installs then only wait on dpkg's lock)
if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
    apt_update
fi

# start the long builds of the named backends in the background (HTCondor shares Apptainer's rootfs)
for b in "${BUILDS[@]}"; do
    wanted=0
    for name in "${names[@]}"; do
        if [[ "$name" == "$b" || ( "$b" == apptainer && "$name" == htcondor ) ]]; then
            wanted=1
        fi
    done
    if (( wanted == 1 )); then
        log "=== $b: build started in the background (log: $LOG_DIR/$b.build.log)"
        timeout --kill-after=30 "$PER_BACKEND_TIMEOUT" bash "$DIR/$b.sh" build >/dev/null 2>"$LOG_DIR/$b.build.log" &
        build_pids+=("$!")
    fi
done
results=()
failed=0
total_start=$(now_ms)
for name in "${names[@]}"; do
    log "=== $name: up"
    start=$(now_ms)
    logfile="$LOG_DIR/$name.up.log"
    set +e
    timeout --kill-after=30 "$PER_BACKEND_TIMEOUT" bash "$DIR/$name.sh" up 2>&1 >"$work/$name.json" |
        tee "$logfile" >&2
    rc=${PIPESTATUS[0]}
    set -e
    seconds="$(awk -v ms=$(( $(now_ms) - start )) 'BEGIN { printf "%.1f", ms / 1000 }')"
    reason=""
    if (( rc != 0 )); then
        failed=1
        reason="$(grep -a 'ERROR: ' "$logfile" | tail -n1 | sed 's/^.*ERROR: //' || true)"
        if (( rc == 124 || rc == 137 )); then
            reason="$name.sh up timed out after ${PER_BACKEND_TIMEOUT}s${reason:+ ($reason)}"
        fi
        reason="${reason:-$name.sh up exited with status $rc}"
        log "=== $name: FAILED in ${seconds}s: $reason (log: $logfile)"
    else
        log "=== $name: ok in ${seconds}s"
    fi
    results+=("$name" "$rc" "$seconds" "$work/$name.json" "$reason" "$logfile")
done

json_rc=0
"$PY" - "$STATE/backends.json" "${results[@]}" <<'EOF' || json_rc=$?
import json, os, sys

path, args = sys.argv[1], sys.argv[2:]
try:
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict):
        data = {}
except (OSError, ValueError):
    data = {}
for i in range(0, len(args), 6):
    name, rc, seconds, details_file, reason, logfile = args[i:i + 6]
    entry = {"ok": False, "reason": reason, "seconds": float(seconds), "log": logfile}
    if rc == "0":
        try:
            with open(details_file) as f:
                details = json.loads(f.read().strip().splitlines()[-1])
            entry.update(details)
            entry.update(ok=True, reason="")
        except (OSError, ValueError, IndexError) as exc:
            entry["reason"] = f"{name}.sh up succeeded but printed no valid details JSON: {exc}"
    data[name] = entry
tmp = path + ".tmp"
with open(tmp, "w") as f:
    json.dump(data, f, indent=2, sort_keys=True)
    f.write("\n")
os.replace(tmp, path)
for name, entry in data.items():
    status = "ok  " if entry.get("ok") else "FAIL"
    extra = "" if entry.get("ok") else "  " + entry.get("reason", "")
    print(f"  {status} {name:<13} {entry.get('seconds', 0):6.1f}s{extra}", file=sys.stderr)
if any(not data[args[i]].get("ok") for i in range(0, len(args), 6)):
    sys.exit(1)
EOF
total="$(awk -v ms=$(( $(now_ms) - total_start )) 'BEGIN { printf "%.1f", ms / 1000 }')"
log "wrote $STATE/backends.json (total ${total}s)"
if (( failed != 0 || json_rc != 0 )); then
    exit 1
fi
