#!/usr/bin/env bash
# Tear down the test backends: down.sh [names...] (default: all, in reverse `up` order).
# Each backend's `down` stops only what our scripts started (recorded PIDs, checked against
# /proc/PID/cmdline) and removes only the netns/veth/links we created. Installed packages,
# the rootfs and the images stay, so the next up.sh is a warm start.
# The entries in backends.json are marked ok=false so tests skip instead of failing oddly.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_TAG=down
# shellcheck source=lib.sh
. "$DIR/lib.sh"

ALL=(k8s backendai slurm-multi gpu htcondor apptainer registry charliecloud slurm ssh podman docker)

names=()
if [[ $# -eq 0 ]]; then
    names=("${ALL[@]}")
else
    # keep the reverse dependency order whatever order the names were given in
    for name in "${ALL[@]}"; do
        for arg in "$@"; do
            if [[ "$arg" == "$name" ]]; then
                names+=("$name")
            fi
        done
    done
    for arg in "$@"; do
        [[ " ${ALL[*]} " == *" $arg "* ]] || die "unknown backend '$arg' (known: ${ALL[*]})"
    done
fi
require_root
ensure_state_dirs

failed=()
start=$(now_ms)
for name in "${names[@]}"; do
    log "=== $name: down"
    if ! timeout --kill-after=10 300 bash "$DIR/$name.sh" down >/dev/null; then
        failed+=("$name")
        log "=== $name: down FAILED"
    fi
done

if [[ -f "$STATE/backends.json" ]]; then
    "$PY" - "$STATE/backends.json" "${names[@]}" <<'EOF'
import json, os, sys

path, names = sys.argv[1], sys.argv[2:]
try:
    with open(path) as f:
        data = json.load(f)
except (OSError, ValueError):
    data = {}
for name in names:
    data[name] = {"ok": False,
                  "reason": f"{name} was stopped by scripts/backends/down.sh; "
                            f"run scripts/backends/up.sh {name}"}
tmp = path + ".tmp"
with open(tmp, "w") as f:
    json.dump(data, f, indent=2, sort_keys=True)
    f.write("\n")
os.replace(tmp, path)
EOF
fi
log "done in $(awk -v ms=$(( $(now_ms) - start )) 'BEGIN { printf "%.1f", ms / 1000 }')s"
if [[ ${#failed[@]} -gt 0 ]]; then
    die "down failed for: ${failed[*]}"
fi
