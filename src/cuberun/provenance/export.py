"""The exports: one task run as a Process Run Crate, one `cuberun run` command as a Provenance Run Crate."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cuberun import __version__
from cuberun.errors import CuberunError
from cuberun.provenance.crate import _Crate
from cuberun.provenance.terms import (
    MLCUBE_LANGUAGE,
    PROCESS_PROFILE,
    PROVENANCE_PROFILE,
    RO_CRATE,
    SCHEMA,
    STATUS,
    WORKFLOW_PROFILE,
    WORKFLOW_RO_CRATE,
    Entity,
    _env,
    _file_uri,
    _prune,
    _ref,
    _slug,
    _time,
)


def export_ro_crate(record: dict[str, Any], dest: Path, *, license: str | None = None) -> Path:
    """Write a Process Run Crate for one task run into the new (or empty) directory `dest`; return it."""
    crate = _Crate(dest, license)
    action = crate.add_run(record, prefix="")
    cube = record.get("cube") or {}
    crate.root.update(
        name=f"cuberun run {record.get('run_id', '?')}: {cube.get('name', 'cube')} / {record.get('task', 'task')}",
        description=f"Provenance of one run of task '{record.get('task', '?')}' of the MLCube '{cube.get('name', '?')}', "
        f"exported by cuberun {__version__}.",
        mentions=[_ref(action)],
    )
    return crate.write([PROCESS_PROFILE], [RO_CRATE])


def export_invocation_crate(records: list[dict[str, Any]], dest: Path, *, license: str | None = None) -> Path:
    """Write a Provenance Run Crate for the task runs of one invocation (one cube) into `dest`; return it."""
    if not records:
        raise CuberunError("no run records to export", hint="run a task first; 'cuberun runs' lists the records")
    records = sorted(records, key=lambda r: str(r.get("start") or ""))
    crate = _Crate(dest, license)
    cube = records[0].get("cube") or {}
    cube_name = str(cube.get("name") or "cube")
    invocation = str(records[0].get("invocation_id") or records[0].get("run_id") or "invocation")

    description = (
        f"Provenance of {len(records)} task run(s) of the MLCube '{cube_name}' started by one cuberun command, "
        f"exported by cuberun {__version__}."
    )
    source = Path(str(cube.get("path") or ""))
    if not cube.get("path") or not source.is_file():
        # without the cube file there is no workflow to point at: a Process Run Crate of the task runs
        actions = [crate.add_run(record, prefix=f"runs/{_slug(str(record.get('run_id', i)))}/") for i, record in enumerate(records)]
        crate.root.update(
            name=f"cuberun invocation {invocation}: {cube_name}", description=description, mentions=[_ref(a) for a in actions]
        )
        return crate.write([PROCESS_PROFILE], [RO_CRATE])

    workflow_id = "mlcube.yaml"
    crate.put(workflow_id, source=source)
    crate.root["hasPart"].append({"@id": workflow_id})
    workflow: Entity = crate.add(
        {
            "@id": workflow_id,
            "@type": ["File", "SoftwareSourceCode", "ComputationalWorkflow", "HowTo"],
            "name": cube_name,
            "description": f"The MLCube '{cube_name}': each task is one step run by cuberun.",
            "programmingLanguage": {"@id": MLCUBE_LANGUAGE},
            "hasPart": [],
            "step": [],
            "encodingFormat": "application/yaml",
        }
    )
    if cube.get("version") is not None:
        workflow["version"] = str(cube["version"])
    if cube.get("path"):
        workflow["url"] = _file_uri(str(cube["path"]))
    crate.add(
        {
            "@id": MLCUBE_LANGUAGE,
            "@type": "ComputerLanguage",
            "name": "MLCube",
            "url": {"@id": "https://mlcommons.github.io/mlcube/"},
        }
    )
    crate.root["mainEntity"] = {"@id": workflow_id}

    controls: list[Entity] = []
    for position, record in enumerate(records):
        action = crate.add_run(record, prefix=f"runs/{_slug(str(record.get('run_id', position)))}/")
        task = str(record.get("task") or "task")
        tool_id = _ref(action["instrument"])["@id"]
        if {"@id": tool_id} not in workflow["hasPart"]:
            workflow["hasPart"].append({"@id": tool_id})
        step_id = f"#step-{_slug(task)}"
        if step_id not in crate.entities:
            crate.add(
                {
                    "@id": step_id,
                    "@type": "HowToStep",
                    "name": task,
                    "position": str(len(workflow["step"])),
                    "workExample": {"@id": tool_id},
                }
            )
            workflow["step"].append({"@id": step_id})
        controls.append(
            crate.add(
                {
                    "@id": f"#control-{_slug(str(record.get('run_id', position)))}",
                    "@type": "ControlAction",
                    "name": f"orchestrate {task}",
                    "instrument": {"@id": step_id},
                    "object": _ref(action),
                    "actionStatus": action["actionStatus"],
                }
            )
        )

    # the run of the whole cube: inputs nobody in this invocation produced, outputs of every task
    produced = {r["@id"] for a in crate.actions for r in a.get("result", [])}
    objects: list[Entity] = []
    results: list[Entity] = []
    for a in crate.actions:
        for item in a.get("object", []):
            if item["@id"] not in produced and item not in objects:
                objects.append(item)
        for item in a.get("result", []):
            if item not in results:
                results.append(item)
    statuses = [str(r.get("status") or "") for r in records]
    overall = "succeeded" if all(s == "succeeded" for s in statuses) else ("running" if "running" in statuses else "failed")
    ends = [str(r["end"]) for r in records if r.get("end")]
    wf_action: Entity = {
        "@id": f"#invocation-{_slug(invocation)}",
        "@type": "CreateAction",
        "name": f"cuberun run of {cube_name}: {', '.join(str(r.get('task')) for r in records)}",
        "description": "Task runs: " + ", ".join(f"{r.get('task')} ({r.get('status')})" for r in records),
        "instrument": {"@id": workflow_id},
        "startTime": _time(records[0].get("start")),
        "actionStatus": SCHEMA + STATUS.get(overall, "FailedActionStatus"),
        "object": objects,
        "result": results,
    }
    if ends and overall != "running":
        wf_action["endTime"] = _time(max(ends))
    agent = crate.actions[0].get("agent")
    if agent:
        wf_action["agent"] = agent
    if overall == "failed":
        failed = [str(r.get("task")) for r in records if r.get("status") != "succeeded"]
        wf_action["error"] = f"task(s) did not succeed: {', '.join(failed)}"
    crate.add(_prune(wf_action))
    crate.add(
        {
            "@id": "#cuberun",
            "@type": "SoftwareApplication",
            "name": "cuberun",
            "softwareVersion": str(records[0].get("cuberun_version") or _env(records[0], "cuberun_version") or __version__),
            "description": "The runner that ran the cube's tasks (a re-implementation of the MLCommons MLCube runner)",
        }
    )
    organize: Entity = {
        "@id": f"#cuberun-{_slug(invocation)}",
        "@type": "OrganizeAction",
        "name": f"cuberun invocation {invocation}",
        "instrument": {"@id": "#cuberun"},
        "object": [_ref(c) for c in controls],
        "result": {"@id": wf_action["@id"]},
        "startTime": _time(records[0].get("start")),
    }
    if agent:
        organize["agent"] = agent
    if "endTime" in wf_action:
        organize["endTime"] = wf_action["endTime"]
    crate.add(_prune(organize))
    crate.root.update(
        name=f"cuberun invocation {invocation}: {cube_name}",
        description=description,
        mentions=[{"@id": wf_action["@id"]}, {"@id": organize["@id"]}, *(_ref(a) for a in crate.actions)],
    )
    return crate.write([PROCESS_PROFILE, WORKFLOW_PROFILE, PROVENANCE_PROFILE, WORKFLOW_RO_CRATE], [RO_CRATE, WORKFLOW_RO_CRATE])


def invocation_records(runs: Iterable[dict[str, Any]], record: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs that share `record`'s invocation_id (just `record` when the field is missing)."""
    invocation = record.get("invocation_id")
    if not invocation:
        return [record]
    return [r for r in runs if r.get("invocation_id") == invocation]
