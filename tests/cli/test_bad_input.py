"""Table of malformed cubes and bad command lines: each gives exact one-line errors and exit 2.

`{d}` in an expected line is the cube directory, `{f}` its mlcube.yaml.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import CLI, write_tree

OK_TASKS = "tasks:\n  hello:\n    parameters:\n      inputs: {name: names/alice.txt}\n      outputs: {chat: {type: file, default: chats/chat.txt}}\n  bye: {}\n"
BASE = "name: demo\n" + OK_TASKS
LOCAL = "local: {command: python3 main.py}\n"

# (id, mlcube.yaml text (None: no file), extra files, argv, expected stderr lines, exit code)
CASES: list[tuple[str, str | bytes | None, dict[str, str], list[str], list[str], int]] = [
    ("yaml-brackets", "name: x\ntasks: [1,2}\n", {}, ["describe"],
     ["{f}:2:12: invalid YAML: did not find expected ',' or ']'. Hint: check the brackets, quotes and indentation"], 2),
    ("yaml-tab", "name: x\ntasks:\n\tt: {}\n", {}, ["describe"],
     ["{f}:3:1: invalid YAML: found character that cannot start any token. Hint: check the brackets, quotes and indentation"], 2),
    ("yaml-unclosed-quote", "name: 'x\ntasks: {}\n", {}, ["describe"],
     ["{f}:3:1: invalid YAML: found unexpected end of stream. Hint: check the brackets, quotes and indentation"], 2),
    ("yaml-bad-indent", "name: x\ntasks:\n  t:\n    entrypoint: a\n   parameters: {}\n", {}, ["describe"],
     ["{f}:5:4: invalid YAML: did not find expected key. Hint: check the brackets, quotes and indentation"], 2),
    ("empty-file", "", {}, ["describe"],
     ["{f}: the file is empty. Hint: a cube needs 'name', 'tasks' and usually a 'docker' section"], 2),
    ("only-comments", "# nothing here\n", {}, ["describe"],
     ["{f}: the file is empty. Hint: a cube needs 'name', 'tasks' and usually a 'docker' section"], 2),
    ("top-level-list", "- a\n- b\n", {}, ["describe"],
     ["{f}:1:1: the top level must be a mapping, not list. Hint: start with 'name:' and 'tasks:'"], 2),
    ("top-level-scalar", "hello\n", {}, ["describe"],
     ["{f}:1:1: the top level must be a mapping, not str. Hint: start with 'name:' and 'tasks:'"], 2),
    ("binary", b"name: x\x00\x01\n", {}, ["describe"],
     ["{f}: cube file is binary, not YAML text. Hint: point to the mlcube.yaml text file"], 2),
    ("not-utf8", b"name: x\ndescription: \xff\xfe\n", {}, ["describe"],
     ["{f}:2: not valid UTF-8 text. Hint: save the file as UTF-8"], 2),
    ("duplicate-key", "name: x\nname: y\n" + OK_TASKS, {}, ["describe"],
     ["{f}:2:1: name: duplicate key 'name'. Hint: it is already set on line 1"], 2),
    ("no-tasks", "name: x\n", {}, ["describe"],
     ["{f}: 'tasks' is missing. Hint: add 'tasks:' mapping each task name to its parameters"], 2),
    ("tasks-misspelt", "name: x\ntask:\n  t: {}\n", {}, ["describe"],
     ["{f}:2:1: task: unknown top-level key 'task'. Hint: did you mean 'tasks'?",
      "{f}: 'tasks' is missing. Hint: 'task' looks like a misspelling of 'tasks'"], 2),
    ("tasks-list-config-1", "name: x\ntasks:\n  - tasks/hello.yaml\n", {}, ["describe"],
     ["{f}:3:5: tasks[0]: task file tasks/hello.yaml does not exist. "
      "Hint: a config 1.0 (MLCommons Box) root file lists task files, relative to its directory"], 2),
    ("tasks-scalar", "name: x\ntasks: hello\n", {}, ["describe"],
     ["{f}:2:8: tasks: must be a mapping of task name to task"], 2),
    ("tasks-empty", "name: x\ntasks: {}\n", {}, ["describe"],
     ["{f}:2:8: tasks: no tasks are defined. Hint: add at least one task"], 2),
    ("task-is-string", "name: x\ntasks:\n  t: python run.py\n", {}, ["describe"],
     ["{f}:3:6: tasks.t: a task must be a mapping with 'entrypoint' and 'parameters', not str"], 2),
    ("entrypoint-typo", "name: x\ntasks:\n  t:\n    entrypont: python x.py\n", {}, ["describe"],
     ["{f}:4:5: tasks.t.entrypont: unknown key 'entrypont' in task 't'. Hint: did you mean 'entrypoint'?"], 2),
    ("parameter-typo", "name: x\ntasks:\n  t:\n    parameter: {}\n", {}, ["describe"],
     ["{f}:4:5: tasks.t.parameter: unknown key 'parameter' in task 't'. Hint: did you mean 'parameters'?"], 2),
    ("two-typos-at-once", "name: x\ntasks:\n  t:\n    entrypont: a\n    parameter: {}\n", {}, ["describe"],
     ["{f}:4:5: tasks.t.entrypont: unknown key 'entrypont' in task 't'. Hint: did you mean 'entrypoint'?",
      "{f}:5:5: tasks.t.parameter: unknown key 'parameter' in task 't'. Hint: did you mean 'parameters'?"], 2),
    ("inputs-typo", "name: x\ntasks:\n  t:\n    parameters:\n      input: {a: b}\n", {}, ["describe"],
     ["{f}:5:7: tasks.t.parameters.input: unknown key 'input'. Hint: did you mean 'inputs'?"], 2),
    ("outputs-typo", "name: x\ntasks:\n  t:\n    parameters:\n      outptus: {a: b/}\n", {}, ["describe"],
     ["{f}:5:7: tasks.t.parameters.outptus: unknown key 'outptus'. Hint: did you mean 'outputs'?"], 2),
    ("inputs-list", "name: x\ntasks:\n  t:\n    parameters:\n      inputs: [a, b]\n", {}, ["describe"],
     ["{f}:5:15: tasks.t.parameters.inputs: must be a mapping of parameter name to path"], 2),
    ("param-key-typo", "name: x\ntasks:\n  t:\n    parameters:\n      inputs:\n        i: {type: file, defualt: a.txt}\n", {}, ["describe"],
     ["{f}:6:25: tasks.t.parameters.inputs.i.defualt: unknown key 'defualt' in parameter 'i'. Hint: did you mean 'default'?"], 2),
    ("param-type-typo", "name: x\ntasks:\n  t:\n    parameters:\n      inputs:\n        i: {type: fiel, default: a}\n", {}, ["describe"],
     ["{f}:6:19: tasks.t.parameters.inputs.i.type: type 'fiel' is not 'file' or 'directory'. Hint: did you mean 'file'?"], 2),
    ("param-type-dir", "name: x\ntasks:\n  t:\n    parameters:\n      inputs:\n        i: {type: dir, default: a}\n", {}, ["describe"],
     ["{f}:6:19: tasks.t.parameters.inputs.i.type: type 'dir' is not 'file' or 'directory'. Hint: did you mean 'directory'?"], 2),
    ("param-opts-bad", "name: x\ntasks:\n  t:\n    parameters:\n      inputs:\n        i: {type: file, default: a, opts: r0}\n", {}, ["describe"],
     ["{f}:6:43: tasks.t.parameters.inputs.i.opts: opts 'r0' is not 'ro' or 'rw'. Hint: did you mean 'ro'?"], 2),
    ("output-ro", "name: x\ntasks:\n  t:\n    parameters:\n      outputs:\n        o: {type: directory, default: out/, opts: ro}\n", {}, ["describe"],
     ["{f}:6:51: tasks.t.parameters.outputs.o.opts: output 'o' cannot be read-only. Hint: remove 'opts: ro' from the output"], 2),
    ("output-untyped", "name: x\ntasks:\n  t:\n    parameters:\n      outputs:\n        o: result.txt\n", {}, ["describe"],
     ["{f}:6:12: tasks.t.parameters.outputs.o: output 'o' has no type. Hint: add 'type: file' or 'type: directory', or end a directory path with '/'"], 2),
    ("numeric-default-short", "name: x\ntasks:\n  t:\n    parameters:\n      inputs:\n        i: 5\n", {}, ["describe"],
     ["{f}:6:12: tasks.t.parameters.inputs.i: must be a path string or a mapping with type/default/opts, not int"], 2),
    ("numeric-default-long", "name: x\ntasks:\n  t:\n    parameters:\n      inputs:\n        i: {type: file, default: 5}\n", {}, ["describe"],
     ["{f}:6:34: tasks.t.parameters.inputs.i.default: default must be a string path, not int 5. Hint: quote the value"], 2),
    ("param-name-space", "name: x\ntasks:\n  t:\n    parameters:\n      inputs:\n        'my input': a.txt\n", {}, ["describe"],
     ["{f}:6:9: tasks.t.parameters.inputs.my input: 'my input' is not a valid parameter name. Hint: use letters, digits, '_' and '-'"], 2),
    ("param-in-and-out", "name: x\ntasks:\n  t:\n    parameters:\n      inputs: {d: data/}\n      outputs: {d: data/}\n", {}, ["describe"],
     ["{f}:6:17: tasks.t.parameters.outputs.d: parameter 'd' is both an input and an output of task 't'. Hint: give the output another name"], 2),
    ("entrypoint-not-string", "name: x\ntasks:\n  t:\n    entrypoint: [python, x.py]\n", {}, ["describe"],
     ["{f}:4:17: tasks.t.entrypoint: must be a string command line"], 2),
    ("entrypoint-empty", "name: x\ntasks:\n  t:\n    entrypoint: ''\n", {}, ["describe"],
     ["{f}:4:17: tasks.t.entrypoint: must not be empty. Hint: remove the key to use the image's ENTRYPOINT"], 2),
    ("platform-wrong-type", "name: x\nplatform: {accelerator_count: two}\n" + OK_TASKS, {}, ["describe"],
     ["{f}:2:31: platform.accelerator_count: must be an integer, not str 'two'"], 2),
    ("platform-negative", "name: x\nplatform: {accelerator_count: -1}\n" + OK_TASKS, {}, ["describe"],
     ["{f}:2:31: platform.accelerator_count: must be 0 or more"], 2),
    ("platform-typo", "name: x\nplatform: {acelerator_count: 1}\n" + OK_TASKS, {}, ["describe"],
     ["{f}:2:12: platform.acelerator_count: unknown key 'acelerator_count'. Hint: did you mean 'accelerator_count'?"], 2),
    ("platform-not-mapping", "name: x\nplatform: gpu\n" + OK_TASKS, {}, ["describe"],
     ["{f}:2:11: platform: must be a mapping, not str"], 2),
    ("top-level-typo", "name: x\ndescripton: hi\n" + OK_TASKS, {}, ["describe"],
     ["{f}:2:1: descripton: unknown top-level key 'descripton'. Hint: did you mean 'description'?"], 2),
    ("name-missing", OK_TASKS, {}, ["describe"],
     ["{f}: 'name' is missing. Hint: add 'name: my_cube' at the top level"], 2),
    ("name-mapping", "name: {a: 1}\n" + OK_TASKS, {}, ["describe"],
     ["{f}:1:7: name: must be a non-empty string"], 2),
    ("env-unset", "name: x\ntasks:\n  t:\n    parameters:\n      inputs:\n        i: ${oc.env:CUBERUN_TEST_UNSET_VAR}/a\n", {}, ["describe"],
     ["{f}:6:12: tasks.t.parameters.inputs.i: environment variable 'CUBERUN_TEST_UNSET_VAR' is not set. "
      "Hint: export CUBERUN_TEST_UNSET_VAR=..., or give a default: ${oc.env:CUBERUN_TEST_UNSET_VAR,DEFAULT}"], 2),
    ("interp-missing-key", "name: x\ntasks:\n  t:\n    parameters:\n      inputs:\n        i: ${nope.key}/a\n", {}, ["describe"],
     ["{f}:6:12: tasks.t.parameters.inputs.i: interpolation key 'nope.key' not found. Hint: define it in the cube"], 2),
    ("interp-docker-image-missing", "name: x\ntasks:\n  t:\n    parameters:\n      inputs:\n        i: ${docker.image}\n", {}, ["describe"],
     ["{f}:6:12: tasks.t.parameters.inputs.i: interpolation key 'docker.image' not found. Hint: add a 'docker:' section with 'image', or choose another --platform"], 2),
    ("interp-cycle", "name: x\na: ${b}\nb: ${a}\ntasks:\n  t:\n    parameters:\n      inputs:\n        i: ${a}\n", {}, ["describe"],
     ["{f}:8:12: tasks.t.parameters.inputs.i: interpolation cycle: a -> b -> a"], 2),
    ("interp-unclosed", "name: x\ntasks:\n  t:\n    parameters:\n      inputs:\n        i: ${workspace/a\n", {}, ["describe"],
     ["{f}:6:12: tasks.t.parameters.inputs.i: unclosed interpolation in '${workspace/a'. Hint: every '${' needs a closing '}'"], 2),
    ("interp-unknown-resolver", "name: x\ntasks:\n  t:\n    parameters:\n      inputs:\n        i: ${oc.decode:x}\n", {}, ["describe"],
     ["{f}:6:12: tasks.t.parameters.inputs.i: unknown resolver 'oc.decode'. Hint: supported: oc.env, oc.select"], 2),
    ("depends-on-unknown", "name: x\ncuberun:\n  depends_on:\n    bye: [helo]\n" + OK_TASKS, {}, ["describe"],
     ["{f}:4:10: cuberun.depends_on.bye: unknown task 'helo'. Hint: did you mean 'hello'?"], 2),
    ("own-section-typo", "name: x\ncuberun:\n  depend_on: {}\n" + OK_TASKS, {}, ["describe"],
     ["{f}:3:3: cuberun.depend_on: unknown key 'depend_on'. Hint: did you mean 'depends_on'?"], 2),
    ("local-section-typo", "name: x\nlocal:\n  comand: python3 x.py\n" + OK_TASKS, {}, ["describe"],
     ["{f}:3:3: local.comand: unknown key 'comand'. Hint: did you mean 'command'?"], 2),
    ("local-env-choice", "name: x\nlocal:\n  env: managd\n" + OK_TASKS, {}, ["describe"],
     ["{f}:3:8: local.env: 'managd' is not allowed; expected one of 'managed', 'current', 'system'. Hint: did you mean 'managed'?"], 2),
    ("deep-nesting", "a: " + "[" * 100 + "]" * 100 + "\n", {}, ["describe"],
     ["{f}:1:68: a[0][0]...: nesting is deeper than 64 levels"], 2),
    # command lines
    ("unknown-command", BASE, {}, ["frobnicate"],
     ["unknown command 'frobnicate' (expected one of 'config', 'configure', 'create', 'describe', 'env', 'export', 'export-provenance', "
      "'graph', 'inspect', 'lock', 'migrate', 'report', ...). Hint: see 'cuberun --help'"], 2),
    ("command-typo", BASE, {}, ["descibe"], ["unknown command 'descibe' (did you mean 'describe'?). Hint: see 'cuberun --help'"], 2),
    ("unknown-task", BASE, {}, ["run", "--task=helo"], ["unknown task 'helo' in {f}. Hint: did you mean 'hello'? (tasks: hello, bye)"], 2),
    ("empty-task", BASE, {}, ["run", "--task=,"], ["--task is empty. Hint: name a task: hello, bye"], 2),
    ("unknown-platform", BASE, {}, ["run", "--task=bye", "--platform=lcoal"], ["unknown platform 'lcoal'. Hint: did you mean 'local'? (platforms: "], 2),
    ("bare-word", BASE, {}, ["run", "--task=hello", "something"], ["unexpected argument 'something'. Hint: parameter overrides are written name=value"], 2),
    ("unknown-option", BASE, {}, ["run", "--task=hello", "--taks=x"], ["unknown option '--taks'. Hint: did you mean '--task'?"], 2),
    ("unknown-flag", BASE, {}, ["run", "--task=hello", "--frobnicate"], ["unknown option '--frobnicate'. Hint: expected one of "], 2),
    ("unknown-param", BASE, {}, ["run", "--task=hello", "nmae=x.txt"], ["unknown parameter 'nmae' for task(s) hello. Hint: did you mean 'name'?"], 2),
    ("unknown-dash-param", BASE, {}, ["run", "--task=hello", "--chatt=x.txt"], ["unknown option '--chatt'. Hint: did you mean '--chat'?"], 2),
    ("empty-param-value", BASE, {}, ["run", "--task=hello", "name="], ["parameter 'name' is given an empty path. Hint: write name=PATH"], 2),
    ("no-name-override", BASE, {}, ["run", "--task=hello", "=x"], ["'=x' has no parameter name. Hint: parameter overrides are written name=value"], 2),
    ("bad-gpus", BASE, {}, ["run", "--task=bye", "--gpus=foo"],
     ["invalid --gpus value 'foo'. Hint: use all, a count N (0 = none), or device=0,1 (indexes or UUIDs)"], 2),
    ("bad-gpus-device", BASE, {}, ["run", "--task=bye", "--gpus=device="],
     ["invalid --gpus value 'device='. Hint: use all, a count N (0 = none), or device=0,1 (indexes or UUIDs)"], 2),
    ("bad-mount", BASE, {}, ["run", "--task=bye", "--mount=rx"],
     ["Invalid value for '--mount': 'rx' is not one of 'ro', 'rw'. Hint: see 'cuberun run --help'"], 2),
    ("p-without-equals", BASE, {}, ["run", "--task=bye", "-Pfoo"], ["-P 'foo' is not of the form key=value. Hint: e.g. -Pdocker.build_strategy=auto"], 2),
    ("p-bad-path", BASE, {}, ["run", "--task=bye", "-Pdocker..image=x"], ["-P: 'docker..image' is not a valid key path. Hint: write dotted keys like docker.image"], 2),
    ("missing-input", BASE + LOCAL, {}, ["run", "--task=hello"],
     ["task 'hello', input 'name': {d}/workspace/names/alice.txt does not exist (workspace {d}/workspace). "
      "Hint: run the task that produces it, or override name=PATH"], 2),
    ("missing-input-override", BASE + LOCAL, {}, ["run", "--task=hello", "name=other.txt"],
     ["task 'hello', input 'name': {d}/workspace/other.txt does not exist (workspace {d}/workspace). "
      "Hint: run the task that produces it, or override name=PATH"], 2),
    ("output-escapes", "name: x\ntasks:\n  t:\n    parameters:\n      outputs:\n        o: ../../escape/\n", {}, ["run", "--dry-run"],
     ["task 't', output 'o': ../../escape/ resolves to {p}/escape, outside the workspace {d}/workspace. Hint: write an absolute path to put outputs elsewhere"], 2),
    ("input-file-is-dir", "name: x\ntasks:\n  t:\n    parameters:\n      inputs: {name: {type: file, default: a.txt}}\n" + LOCAL,
     {"workspace/a.txt/x": "x"}, ["run", "--dry-run"],
     ["task 't', input 'name': {d}/workspace/a.txt is a directory, but the parameter is a file. Hint: give name=a.txt on the command line "
      "to pass a directory on purpose, or override name=FILE"], 2),
    ("input-dir-is-file", "name: x\ntasks:\n  t:\n    parameters:\n      inputs: {data: data/}\n" + LOCAL,
     {"workspace/data": "x"}, ["run", "--dry-run"],
     ["task 't', input 'data': {d}/workspace/data is a file, but the parameter is a directory. Hint: override data=DIR"], 2),
    ("no-cube-dir", None, {}, ["describe"],
     ["no mlcube.yaml in {d}. Hint: pass --mlcube=DIR with the cube's directory, or the YAML file itself"], 2),
    ("legacy-mlbox", None, {"mlbox.yaml": "name: x\n"}, ["describe"],
     ["{d}/mlbox.yaml: 'tasks' is missing. Hint: the mlbox.yaml of a legacy MLBox maps each task name to its inputs and outputs",
      "{d}/mlbox.yaml: implementation/mlbox_implementation.yaml is missing. "
      "Hint: a legacy MLBox says how to run its tasks in implementation/mlbox_implementation.yaml"], 2),
    ("mlcube-path-missing", BASE, {}, ["describe", "--mlcube=nowhere"],
     ["{d}/nowhere does not exist. Hint: pass --mlcube=DIR with the cube's directory, or its mlcube.yaml"], 2),
    ("no-local-command", BASE, {}, ["run", "--task=bye"],
     ["cube 'demo' does not say how to run on the host: no 'local:' section and no {d}/Dockerfile. "
      "Hint: add 'local: {command: python3 main.py}' to mlcube.yaml, or use --platform=docker"], 2),
    ("dockerfile-no-entrypoint", BASE, {"Dockerfile": "FROM python:3.11\nCOPY . /app\n"}, ["run", "--task=bye"],
     ["task 'bye' has no entrypoint and {d}/Dockerfile has no ENTRYPOINT or CMD to derive the host command from. "
      "Hint: give task 'bye' an entrypoint, or add a 'local: {command: ...}' section (or -Plocal.command=...)"], 2),
    ("settings-broken-yaml", BASE, {"settings.yaml": "platforms: [\n"}, ["run", "--task=bye", "--platform=x"],
     ["{d}/settings.yaml:2:1: invalid YAML: did not find expected node content. Hint: check the brackets, quotes and indentation"], 2),
    ("settings-no-runner", BASE, {"settings.yaml": "platforms:\n  mine: {docker: podman}\n"}, ["run", "--task=bye", "--platform=mine"],
     ["{d}/settings.yaml:2:3: platforms.mine: platform 'mine' has no 'runner'. Hint: add runner: docker (or local, ssh, ...)"], 2),
    ("settings-unknown-key", BASE, {"settings.yaml": "platfroms: {}\n"}, ["run", "--task=bye"],
     ["{d}/settings.yaml:1:1: platfroms: unknown settings key 'platfroms'. Hint: did you mean 'platforms'?"], 2),
    ("settings-unknown-runner", BASE, {"settings.yaml": "platforms:\n  mine: {runner: dockre}\n"}, ["run", "--task=bye", "--platform=mine"],
     ["unknown runner 'dockre'. Hint: "], 2),
    ("settings-bad-local-key", BASE, {"settings.yaml": "platforms:\n  mine: {runner: local, comand: x}\n"}, ["run", "--task=bye", "--platform=mine"],
     ["{d}/settings.yaml: comand: unknown key 'comand'. Hint: did you mean 'command'?"], 2),
    ("sweep-no-values", BASE + LOCAL, {}, ["run", "--task=bye", "--sweep=x"],
     ["--sweep 'x' is not of the form key=v1,v2,.... Hint: e.g. --sweep batch_size=32,64,128"], 2),
    ("sweep-repeated-value", BASE + LOCAL, {}, ["run", "--task=bye", "--sweep=a=1,1"], ["--sweep 'a=1,1' repeats a value. Hint: list each value once"], 2),
    ("sweep-needs-one-task", BASE + LOCAL, {}, ["run", "--sweep=a=1,2"], ["--sweep applies to one task. Hint: name it with --task=TASK"], 2),
    ("sweep-unknown-key", BASE + LOCAL, {"workspace/names/alice.txt": "A"}, ["run", "--task=hello", "--sweep=nmae=1,2"],
     ["--sweep 'nmae': no task reads it: no YAML input of task 'hello' has the key 'nmae' (none of its inputs are YAML files). "
      "Hint: name a key of a parameter file (file:key.path) or a config key such as local.env_vars.X"], 2),
    ("jobs-zero", BASE + LOCAL, {}, ["run", "--task=bye", "--jobs=0"],
     ["Invalid value for '--jobs' / '-j': 0 is not in the range 1<=x<=64. Hint: see 'cuberun run --help'"], 2),
    ("graph-format", BASE, {}, ["graph", "--format=svg"],
     ["Invalid value for '--format': 'svg' is not one of 'text', 'dot', 'mermaid'. Hint: see 'cuberun graph --help'"], 2),
    ("report-no-workspace", BASE, {}, ["report", "--workspace=nowhere/ws"],
     ["the workspace {d}/nowhere/ws does not exist. Hint: pass the --workspace (or --mlcube) whose runs to report"], 2),
    ("show-unknown-run", BASE, {}, ["show", "nope"], ["no run 'nope' in {d}/workspace. Hint: no runs recorded yet"], 2),
    ("export-unknown-run", BASE, {}, ["export-provenance", "nope"], ["no run 'nope' in {d}/workspace. Hint: no runs recorded yet"], 2),
    ("runs-bad-status", BASE, {}, ["runs", "--status=weird"],
     ["Invalid value for '--status': 'weird' is not one of 'succeeded', 'failed', 'interrupted', 'error', 'running', 'cancelled', 'lost'. "
      "Hint: see 'cuberun runs --help'"], 2),
    ("p-local-choice", BASE + LOCAL, {}, ["run", "--task=bye", "-Plocal.env=x"],
     ["-P: local.env: 'x' is not allowed; expected one of 'managed', 'current', 'system'"], 2),
    ("p-platform-type", BASE + LOCAL, {}, ["run", "--task=bye", "-Pplatform.accelerator_count=x"],
     ["-P: platform.accelerator_count: must be an integer, not str 'x'"], 2),
    ("p-empty-key", BASE + LOCAL, {}, ["run", "--task=bye", "-P=x"],
     ["-P: '=x' is not of the form key=value. Hint: write it as key=value, e.g. -Pdocker.image=repo/name:tag"], 2),
    ("workspace-is-a-file", BASE + LOCAL, {}, ["run", "--task=bye", "--workspace=mlcube.yaml"],
     ["the workspace {d}/mlcube.yaml is not a directory. Hint: pass --workspace=DIR with a directory (it is created if missing)"], 2),
    ("gpus-negative", BASE + LOCAL, {}, ["run", "--task=bye", "--gpus=-1"],
     ["invalid --gpus value '-1'. Hint: use all, a count N (0 = none), or device=0,1 (indexes or UUIDs)"], 2),
    ("option-needs-value", BASE + LOCAL, {}, ["run", "--task=bye", "--memory"], ["Option '--memory' requires an argument. Hint: see 'cuberun --help'"], 2),
    ("config-get-missing", BASE, {}, ["config", "get", "nope.x"], ["no settings key 'nope.x'. Hint: expected one of 'platforms', 'default_platform'"], 2),
    ("config-set-bad-key", BASE, {}, ["config", "set", "nope", "1"], ["cannot set 'nope'. Hint: settable: default_platform, platforms.NAME.KEY"], 2),
    ("config-set-bad-value", BASE, {}, ["config", "set", "platforms.local.env", "weird"],
     ["platforms.local.env: 'weird' is not allowed; expected one of 'managed', 'current', 'system'"], 2),
    ("create-bad-task", BASE, {}, ["create", "x", "--task=1bad"], ["'1bad' is not a valid task name. Hint: use letters, digits, '_' and '-' (at most 64), such as 'train'"], 2),
    ("inspect-bad-format", BASE, {}, ["inspect", "--format=xml"],
     ["Invalid value for '--format': 'xml' is not one of 'json', 'yaml'. Hint: see 'cuberun inspect --help'"], 2),
    ("control-character", "name: x\x01\ntasks: {t: {}}\n", {}, ["describe"],
     ["{f}:1:8: invalid YAML: unacceptable character #x0001: control characters are not allowed. Hint: remove control characters from the file"], 2),
    ("huge-file", "# " + "x" * (8 * 1024 * 1024) + "\n", {}, ["describe"],
     ["{f}: cube file is too large (8388611 bytes; the limit is 8388608)"], 2),
    ("unicode-typo-in-path-key", "name: x\ntasks:\n  t:\n    parameters:\n      inputs:\n        données: {typ: file}\n", {}, ["describe"],
     ["{f}:6:19: tasks.t.parameters.inputs.données.typ: unknown key 'typ' in parameter 'données'. Hint: did you mean 'type'?"], 2),
    ("settings-platforms-list", BASE, {"settings.yaml": "platforms: [a, b]\n"}, ["run", "--task=bye", "--platform=x"],
     ["{d}/settings.yaml:1:12: platforms: must be a mapping of platform name to runner config"], 2),
    ("settings-top-list", BASE, {"settings.yaml": "- a\n"}, ["run", "--task=bye"],
     ["{d}/settings.yaml:1:1: must be a mapping with a 'platforms' section"], 2),
    ("settings-entry-scalar", BASE, {"settings.yaml": "platforms:\n  mine: docker\n"}, ["run", "--task=bye", "--platform=mine"],
     ["{d}/settings.yaml:2:9: platforms.mine: must be a mapping with a 'runner' key"], 2),
    ("settings-bad-value", BASE, {"settings.yaml": "platforms:\n  mine: {runner: local, env: 3}\n"}, ["run", "--task=bye", "--platform=mine"],
     ["{d}/settings.yaml: env: must be a string, not int 3. Hint: quote the value to make it a string"], 2),
    ("runner-override-typo", BASE + "local: {command: python3 x.py}\n", {}, ["run", "--task=bye", "-Prunner.comand=x"],
     ["-P: runner.comand: unknown key 'comand'. Hint: did you mean 'command'?"], 2),
]


@pytest.mark.parametrize(("mlcube", "files", "argv", "expected", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(cli: CLI, tmp_path: Path, mlcube: str | bytes | None, files: dict[str, str], argv: list[str], expected: list[str],
                   code: int) -> None:
    cube = tmp_path / "cube"
    cube.mkdir()
    if mlcube is not None:
        write_tree(cube, {"mlcube.yaml": mlcube})
    write_tree(cube, files)
    env = {}
    if "settings.yaml" in files:
        env["CUBERUN_SETTINGS"] = str(cube / "settings.yaml")
    before = sorted(p.relative_to(cube) for p in cube.rglob("*"))
    result = cli(*argv, cwd=cube, env=env)
    lines = [line for line in result.stderr.splitlines() if not line.startswith("cuberun: warning:")]
    want = ["cuberun: error: " + e.replace("{d}", str(cube)).replace("{f}", str(cube / "mlcube.yaml")).replace("{p}", str(tmp_path)) for e in expected]
    assert "Traceback" not in result.stderr
    assert result.returncode == code, result.stderr
    assert len(lines) == len(want), result.stderr
    for got, exp in zip(lines, want, strict=True):
        if exp.endswith(("(platforms: ", "expected one of ", "did you mean ", "Hint: ")):
            assert got.startswith(exp), got
        else:
            assert got == exp
    after = sorted(p.relative_to(cube) for p in cube.rglob("*"))
    assert before == after, "a failed command must not write anything"


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 100
