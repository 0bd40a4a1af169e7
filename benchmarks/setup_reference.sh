#!/usr/bin/env bash
# Create the two virtualenvs the benchmarks compare (idempotent; a re-run is instant):
#
#   $BENCH/ref-venv      the reference implementation from PyPI: mlcube==0.0.9 + mlcube-docker==0.0.9
#                        (needs pip<24.1: they pin omegaconf==2.1.0, whose metadata newer pip rejects;
#                        they break on Python 3.12, so the venv uses a 3.10/3.11 interpreter)
#   $BENCH/cuberun-venv  cuberun installed editable from this checkout, so it is measured through
#                        its own console script, not through pyenv shims (+0.1-0.3 s per call)
#
#   $BENCH/baseline-venv cuberun at an earlier commit (only with CUBERUN_BENCH_BASELINE=<git rev>), for
#                        benchmarks that compare with "today's" cuberun (e.g. the check before code hashing)
#
# BENCH = ${CUBERUN_BENCH_DIR:-/tmp/cuberun-bench}. Override the interpreter with
# CUBERUN_BENCH_PYTHON=/path/to/python3.11. Pass --force to rebuild the venvs.
set -euo pipefail

BENCH="${CUBERUN_BENCH_DIR:-/tmp/cuberun-bench}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REF_VENV="$BENCH/ref-venv"
CR_VENV="$BENCH/cuberun-venv"
REF_MARKER="$REF_VENV/.cuberun-bench-ready"
CR_MARKER="$CR_VENV/.cuberun-bench-ready"
REF_PACKAGES=("mlcube==0.0.9" "mlcube-docker==0.0.9")

log() { printf '%s setup_reference: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

BASE_VENV="$BENCH/baseline-venv"
if [[ "${1:-}" == "--force" ]]; then
    rm -rf "$REF_VENV" "$CR_VENV" "$BASE_VENV"
elif [[ $# -gt 0 ]]; then
    die "usage: $0 [--force]"
fi

# The interpreter: an explicit choice, else the first of these that is 3.10 or 3.11.
# (A pyenv shim is fine for creating a venv; the venv's own python is what gets timed.)
pick_python() {
    local candidate
    for candidate in "${CUBERUN_BENCH_PYTHON:-}" python3 /usr/bin/python3 python3.11 python3.10; do
        [[ -n "$candidate" ]] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] < (3, 12) else 1)' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

PYTHON="$(pick_python)" || die "no Python 3.10/3.11 found (the reference breaks on 3.12); set CUBERUN_BENCH_PYTHON"
mkdir -p "$BENCH"

# make_venv DIR: a fresh venv unless DIR already holds a working one.
make_venv() {
    local dir=$1
    if [[ -x "$dir/bin/python" ]] && "$dir/bin/python" -c 'pass' 2>/dev/null; then
        return 0
    fi
    rm -rf "$dir"
    log "creating $dir with $PYTHON ($("$PYTHON" -c 'import platform; print(platform.python_version())'))"
    "$PYTHON" -m venv "$dir"
}

pip_in() {
    local dir=$1
    shift
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$dir/bin/python" -m pip --no-input -q "$@"
}

# ---------------------------------------------------------------- the reference
if [[ -f "$REF_MARKER" && -x "$REF_VENV/bin/mlcube" ]]; then
    log "reference venv ready: $REF_VENV ($(cat "$REF_MARKER"))"
else
    rm -f "$REF_MARKER"
    make_venv "$REF_VENV"
    start=$SECONDS
    log "pip<24.1 in $REF_VENV"
    pip_in "$REF_VENV" install "pip<24.1"
    log "installing ${REF_PACKAGES[*]} (takes a minute or two)"
    pip_in "$REF_VENV" install "${REF_PACKAGES[@]}"
    # smoke: the console script starts and both packages import
    "$REF_VENV/bin/mlcube" --help >/dev/null || die "the reference's 'mlcube --help' failed"
    "$REF_VENV/bin/python" -c 'import mlcube, mlcube_docker' || die "mlcube/mlcube_docker do not import"
    versions="$("$REF_VENV/bin/python" -c 'from importlib.metadata import version as v; print("mlcube", v("mlcube"), "mlcube-docker", v("mlcube-docker"), "pip", v("pip"))')"
    printf '%s\n' "$versions" >"$REF_MARKER"
    log "reference ready in $(( SECONDS - start ))s: $versions"
fi

# ---------------------------------------------------------------- cuberun (editable)
# The marker holds the repo path: an editable install points at one checkout only.
if [[ -f "$CR_MARKER" && "$(head -n1 "$CR_MARKER")" == "$REPO" && -x "$CR_VENV/bin/cuberun" ]] \
    && "$CR_VENV/bin/python" -c 'import cuberun' 2>/dev/null; then
    log "cuberun venv ready: $CR_VENV (editable from $REPO)"
else
    rm -f "$CR_MARKER"
    make_venv "$CR_VENV"
    start=$SECONDS
    log "pip install -e $REPO into $CR_VENV"
    pip_in "$CR_VENV" install -e "$REPO"
    "$CR_VENV/bin/cuberun" --version >/dev/null || die "'cuberun --version' failed in $CR_VENV"
    printf '%s\n%s\n' "$REPO" "$("$CR_VENV/bin/cuberun" --version)" >"$CR_MARKER"
    log "cuberun venv ready in $(( SECONDS - start ))s"
fi

# ---------------------------------------------------------------- cuberun at an earlier commit (optional)
if [[ -n "${CUBERUN_BENCH_BASELINE:-}" ]]; then
    rev="$(git -C "$REPO" rev-parse --verify "${CUBERUN_BENCH_BASELINE}^{commit}")" || die "CUBERUN_BENCH_BASELINE: no commit ${CUBERUN_BENCH_BASELINE}"
    if [[ -f "$BASE_VENV/.cuberun-bench-ready" && "$(head -n1 "$BASE_VENV/.cuberun-bench-ready")" == "$rev" ]]; then
        log "baseline venv ready: $BASE_VENV (cuberun at $rev)"
    else
        rm -rf "$BASE_VENV"
        make_venv "$BASE_VENV"
        src="$BASE_VENV/src"
        mkdir -p "$src"
        git -C "$REPO" archive "$rev" | tar -x -C "$src"
        log "pip install cuberun at $rev into $BASE_VENV"
        pip_in "$BASE_VENV" install "$src"
        printf '%s\n' "$rev" >"$BASE_VENV/.cuberun-bench-ready"
    fi
fi

printf 'ref_venv=%s\ncuberun_venv=%s\n' "$REF_VENV" "$CR_VENV"
