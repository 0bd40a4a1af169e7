#!/usr/bin/env bash
# Install what the tests need, bring up the real backends (as root), run every check and test.
# CUBERUN_REQUIRE_BACKENDS=1 turns a backend that cannot start into a failure instead of a skip.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
venv=${CUBERUN_VENV:-$here/.venv}
python=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --disable-pip-version-check -q -e ".[test]"
# the HTCondor runner is a plugin package of its own (found through the cuberun.runners entry
# point): installed offline, without build isolation (setuptools and wheel come from .[test])
"$venv/bin/python" -m pip install --disable-pip-version-check -q --no-index --no-deps --no-build-isolation -e plugins/cuberun-htcondor

backends_rc=0
if [ "$(id -u)" = 0 ]; then
  bash scripts/backends/up.sh || backends_rc=$?
  if [ "$backends_rc" != 0 ]; then
    echo "test.sh: some backends did not come up (see ${CUBERUN_TEST_STATE:-/tmp/cuberun-test-state}/backends.json)" >&2
    if [ "${CUBERUN_REQUIRE_BACKENDS:-0}" = 1 ]; then
      exit "$backends_rc"
    fi
  fi
  bash scripts/install-chromium.sh  # the HTML report is checked in headless Chromium
else
  echo "test.sh: not root: backend tests will be skipped with a reason" >&2
fi

"$venv/bin/ruff" check src tests benchmarks plugins
"$venv/bin/mypy"
# a shared cache of managed envs across the session keeps repeated env creation out of the run
export CUBERUN_TEST_CACHE=${CUBERUN_TEST_CACHE:-${CUBERUN_TEST_STATE:-/tmp/cuberun-test-state}/env-cache}
mkdir -p "$CUBERUN_TEST_CACHE"
# kfp pins requests/urllib3 exactly and drags the kubernetes client down to 30.x: its tests run in a venv of their own
if [ $# -eq 0 ]; then
  kvenv=${CUBERUN_KFP_VENV:-$here/.venv-kubeflow}
  [ -x "$kvenv/bin/python" ] || "$python" -m venv "$kvenv"
  "$kvenv/bin/python" -m pip install --disable-pip-version-check -q -e ".[kubeflow]" "pytest>=7.4"
  CUBERUN_REQUIRE_KFP=1 "$kvenv/bin/python" -m pytest -p no:cacheprovider -q tests/unit/test_kubeflow_pipeline.py
  set -- --ignore=tests/unit/test_kubeflow_pipeline.py  # ran above, in the venv that has kfp
  # the reference implementation (mlcube 0.0.9, own venv): the third-party cubes' docker commands are compared with its
  bash benchmarks/setup_reference.sh >/dev/null || echo "test.sh: the reference implementation could not be installed" >&2
  # the real backend.ai client (it pins click/rich, so never beside cuberun) for the runner's API test
  bvenv=${CUBERUN_TEST_STATE:-/tmp/cuberun-test-state}/backendai-venv
  if [ ! -x "$bvenv/bin/backend.ai" ]; then
    mkdir -p "$(dirname "$bvenv")"
    "$python" -m venv "$bvenv"
    "$bvenv/bin/python" -m pip install --disable-pip-version-check -q "backend.ai-client>=23.9" "yarl<1.10"
  fi
fi
exec "$venv/bin/python" -m pytest -p no:cacheprovider "$@"
