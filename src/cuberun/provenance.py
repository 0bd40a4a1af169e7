"""Export run records as Workflow Run RO-Crates (JSON-LD) that third-party tools can read.

`export_ro_crate` writes a Process Run Crate (https://w3id.org/ro/wfrun/process/0.5) for one task run;
`export_invocation_crate` writes a Provenance Run Crate (https://w3id.org/ro/wfrun/provenance/0.5) for every
task run of one `cuberun run` command: the cube is the ComputationalWorkflow, each task a tool and a step.

Data entities are not copied: inputs and outputs may be huge, so they are referenced by absolute `file://`
URIs with the size and SHA-256 the record took at run time (`sdDatePublished` says when). Only the run record,
the task's log and (for an invocation) the mlcube.yaml are copied into the crate. See docs/report.md.
"""

from __future__ import annotations

import json
import mimetypes
import shlex
import shutil
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from cuberun import __version__
from cuberun.errors import CuberunError

Entity = dict[str, Any]

RO_CRATE = "https://w3id.org/ro/crate/1.1"
CONTEXT = ["https://w3id.org/ro/crate/1.1/context", "https://w3id.org/ro/terms/workflow-run/context"]
PROCESS_PROFILE = "https://w3id.org/ro/wfrun/process/0.5"
WORKFLOW_PROFILE = "https://w3id.org/ro/wfrun/workflow/0.5"
PROVENANCE_PROFILE = "https://w3id.org/ro/wfrun/provenance/0.5"
WORKFLOW_RO_CRATE = "https://w3id.org/workflowhub/workflow-ro-crate/1.0"
PROFILE_NAMES = {
    PROCESS_PROFILE: ("Process Run Crate", "0.5"),
    WORKFLOW_PROFILE: ("Workflow Run Crate", "0.5"),
    PROVENANCE_PROFILE: ("Provenance Run Crate", "0.5"),
    WORKFLOW_RO_CRATE: ("Workflow RO-Crate", "1.0"),
}
MLCUBE_LANGUAGE = "#mlcube"
SCHEMA = "http://schema.org/"
STATUS = {"succeeded": "CompletedActionStatus", "running": "ActiveActionStatus"}  # anything else: FailedActionStatus
EXTRA_TYPES = {
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
    ".jsonl": "application/jsonl",
    ".log": "text/plain",
    ".md": "text/markdown",
}
NOT_SPECIFIED_LICENSE = "#license-not-specified"


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
    shutil.copyfile(source, crate.dest / workflow_id)
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


# -- building --------------------------------------------------------------------------------


class _Crate:
    def __init__(self, dest: Path, license: str | None) -> None:
        dest = Path(dest)
        if _ours(dest):
            shutil.rmtree(dest)  # an earlier export of ours: replace it whole
        elif dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise CuberunError(f"{dest} exists and is not an empty directory", hint="export into a new directory")
        dest.mkdir(parents=True, exist_ok=True)
        self.dest = dest
        self.entities: dict[str, Entity] = {}
        self.actions: list[Entity] = []
        self.versions: dict[str, str | None] = {}  # file URI -> sha256 of the entity that holds the plain URI
        self.root: Entity = {
            "@id": "./",
            "@type": "Dataset",
            "datePublished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "hasPart": [],
        }
        if license and "://" in license:  # a license URL: a contextual entity, as RO-Crate recommends
            self.root["license"] = {"@id": license}
            self.add({"@id": license, "@type": "CreativeWork", "name": license})
        elif license:  # e.g. an SPDX identifier
            self.root["license"] = license
        else:
            self.root["license"] = {"@id": NOT_SPECIFIED_LICENSE}
            self.add(
                {
                    "@id": NOT_SPECIFIED_LICENSE,
                    "@type": "CreativeWork",
                    "name": "No license specified",
                    "description": "cuberun does not know the license of the cube's data; ask the cube's authors.",
                }
            )

    def add(self, entity: Entity) -> Entity:
        self.entities[entity["@id"]] = entity
        return entity

    def add_run(self, record: dict[str, Any], prefix: str) -> Entity:
        """The CreateAction of one task run, its tool, data entities, log and record."""
        run_id = str(record.get("run_id") or "run")
        task = str(record.get("task") or "task")
        cube = record.get("cube") or {}
        status = str(record.get("status") or "")
        action_id = f"#run-{_slug(run_id)}"

        tool_id = f"#task-{_slug(task)}"  # a local id: the profile's choice for tools not described on the web
        tool = self.entities.get(tool_id) or self.add(
            {
                "@id": tool_id,
                "@type": "SoftwareApplication",
                "name": f"{cube.get('name', 'cube')} {task}",
                "description": f"Task '{task}' of the MLCube '{cube.get('name', '?')}'"
                + (f" ({cube['path']})" if cube.get("path") else ""),
                "url": _file_uri(str(cube["path"])) if cube.get("path") else None,
                "softwareVersion": str(cube["version"]) if cube.get("version") is not None else None,
                "input": [],
                "output": [],
            }
        )

        action: Entity = {
            "@id": action_id,
            "@type": "CreateAction",
            "name": f"Run {run_id} of task {task} ({record.get('platform') or record.get('runner') or '?'})",
            "instrument": {"@id": tool_id},
            "startTime": _time(record.get("start")),
            "endTime": _time(record.get("end")),
            "actionStatus": SCHEMA + STATUS.get(status, "FailedActionStatus"),
            "object": [],
            "result": [],
        }
        command = record.get("command")
        if isinstance(command, list) and command:
            action["description"] = shlex.join(str(c) for c in command)
        if status not in STATUS:
            action["error"] = str(record.get("error") or _failure(record))
        agent = _agent(self, record)
        if agent:
            action["agent"] = agent
        image = _container_image(self, record, action_id)
        if image:
            action["containerImage"] = image

        hashed_in = _dict(record.get("inputs"))
        hashed_out = _dict(record.get("outputs"))
        params = _dict(record.get("parameters"))
        for name, spec in params.items():
            if not isinstance(spec, dict) or not spec.get("path"):
                continue
            io = "output" if spec.get("io") == "output" else "input"
            facts = (hashed_out if io == "output" else hashed_in).get(name)
            facts = facts if isinstance(facts, dict) else {}
            formal = self._formal(tool, task, str(name), io, str(spec.get("type") or facts.get("type") or "file"))
            if io == "output" and status != "succeeded" and not facts:
                continue  # a failed run produced nothing we can vouch for
            when = record.get("end") if io == "output" else record.get("start")
            entity = self._data(str(spec["path"]), str(spec.get("type") or facts.get("type") or "file"), facts, when, formal)
            action["object" if io == "input" else "result"].append({"@id": entity["@id"]})
        for key, value in _values(record):
            pv = self.add({"@id": f"{action_id}-pv-{_slug(key)}", "@type": "PropertyValue", "name": key, "value": value})
            action["object"].append({"@id": pv["@id"]})
        steps = _list(record.get("steps"))
        run_step = next((s for s in steps if isinstance(s, dict) and s.get("purpose") == "run"), None)
        env = run_step.get("env") if isinstance(run_step, dict) else None
        if isinstance(env, dict) and env:
            action["environment"] = [
                {"@id": self.add({"@id": f"{action_id}-env-{_slug(k)}", "@type": "PropertyValue", "name": str(k), "value": str(v)})["@id"]}
                for k, v in sorted(env.items())
            ]

        # the record and the log travel inside the crate
        folder = self.dest / prefix if prefix else self.dest
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "record.json").write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
        self._part(f"{prefix}record.json", f"cuberun run record of {run_id}", "application/json", action_id, docs="docs/records.md")
        log = _log_path(record)
        if log is not None:
            shutil.copyfile(log, folder / "output.log")
            self._part(f"{prefix}output.log", f"Output (stdout and stderr) of run {run_id}", "text/plain", action_id)

        action = _prune(action)
        self.actions.append(action)
        return self.add(action)

    def _formal(self, tool: Entity, task: str, name: str, io: str, kind: str) -> str:
        formal_id = f"#param-{_slug(task)}-{_slug(name)}"
        if formal_id not in self.entities:
            self.add(
                {
                    "@id": formal_id,
                    "@type": "FormalParameter",
                    "name": name,
                    "additionalType": "Dataset" if kind == "directory" else "File",
                    "description": f"{io} parameter '{name}' of task '{task}'",
                }
            )
            tool[io].append({"@id": formal_id})
        return formal_id

    def _data(self, path: str, kind: str, facts: dict[str, Any], when: Any, formal: str) -> Entity:
        uri = _file_uri(path) + ("/" if kind == "directory" and not path.endswith("/") else "")
        sha = str(facts["sha256"]) if facts.get("sha256") else None
        entity_id = uri
        if uri in self.versions and self.versions[uri] != sha and sha is not None:
            entity_id = f"{uri}#sha256={sha[:16]}"  # the same path with other content: another version
        else:
            self.versions.setdefault(uri, sha)
        entity = self.entities.get(entity_id)
        if entity is None:
            entity = self.add(
                {
                    "@id": entity_id,
                    "@type": "Dataset" if kind == "directory" else "File",
                    "name": PurePosixPath(path.rstrip("/")).name or path,
                    "alternateName": path,
                    "exampleOfWork": [],
                }
            )
            if kind != "directory":
                entity["encodingFormat"] = _media_type(path)
            if facts.get("bytes") is not None:
                entity["contentSize"] = str(facts["bytes"])
            if sha and kind == "directory":
                entity["identifier"] = f"cuberun-tree-sha256:{sha}"
                entity["description"] = f"Directory of {facts.get('files', '?')} file(s); identifier: cuberun's digest of the tree"
            elif sha:
                entity["sha256"] = sha
            if (sha or facts.get("bytes") is not None) and when:
                entity["sdDatePublished"] = _time(when)
            self.root["hasPart"].append({"@id": entity_id})
        if {"@id": formal} not in entity["exampleOfWork"]:
            entity["exampleOfWork"].append({"@id": formal})
        return entity

    def _part(self, rel: str, name: str, fmt: str, about: str, docs: str | None = None) -> None:
        entity: Entity = {"@id": rel, "@type": "File", "name": name, "encodingFormat": fmt, "about": {"@id": about}}
        entity["contentSize"] = str((self.dest / rel).stat().st_size)
        if docs:
            entity["description"] = f"Schema: {docs} in the cuberun sources"
        self.add(entity)
        self.root["hasPart"].append({"@id": rel})

    def write(self, profiles: list[str], descriptor: list[str]) -> Path:
        lines = [f"# {self.root.get('name', 'cuberun provenance')}", "", str(self.root.get("description", "")), ""]
        lines += ["`ro-crate-metadata.json` (RO-Crate 1.1, JSON-LD) describes the runs below; it conforms to:", ""]
        lines += [f"- {PROFILE_NAMES[p][0]} {PROFILE_NAMES[p][1]}: <{p}>" for p in profiles]
        lines += ["", "| run | started | ended | status |", "|---|---|---|---|"]
        for a in self.actions:
            status = str(a.get("actionStatus", "")).removeprefix(SCHEMA)
            lines.append(f"| {a.get('name', a['@id'])} | {a.get('startTime', '')} | {a.get('endTime', '')} | {status} |")
        lines += [
            "",
            "Inputs and outputs are referenced by their original `file://` paths with the size and SHA-256",
            "recorded when the task ran (`sdDatePublished`); they are not copied. Each run's record and log are",
            "included as `record.json` and `output.log`.",
            "",
        ]
        (self.dest / "README.md").write_text("\n".join(lines), encoding="utf-8")
        self.add({"@id": "README.md", "@type": "File", "name": "README", "about": {"@id": "./"}, "encodingFormat": "text/markdown"})
        self.root["hasPart"].append({"@id": "README.md"})
        self.root["conformsTo"] = [{"@id": p} for p in profiles]
        meta: Entity = {
            "@id": "ro-crate-metadata.json",
            "@type": "CreativeWork",
            "about": {"@id": "./"},
            "conformsTo": [{"@id": c} for c in descriptor] if len(descriptor) > 1 else {"@id": descriptor[0]},
        }
        profile_entities = [
            {"@id": p, "@type": "CreativeWork", "name": PROFILE_NAMES[p][0], "version": PROFILE_NAMES[p][1]} for p in profiles
        ]
        graph = [_flat(e) for e in (meta, self.root, *profile_entities, *(_prune(e) for e in self.entities.values()))]
        text = json.dumps({"@context": CONTEXT, "@graph": graph}, indent=2, ensure_ascii=False, default=str)
        (self.dest / "ro-crate-metadata.json").write_text(text + "\n", encoding="utf-8")
        return self.dest


# -- helpers ---------------------------------------------------------------------------------


def _ref(entity: Entity) -> dict[str, str]:
    return {"@id": str(entity["@id"])}


def _prune(entity: Entity) -> Entity:
    """Drop empty properties (None, [], {}) so that no entity claims what the record did not say."""
    return {k: v for k, v in entity.items() if v is not None and v != [] and v != {}}


def _flat(entity: Entity) -> Entity:
    """RO-Crate 1.1 recommends a single value over a one-item list."""
    return {k: v[0] if isinstance(v, list) and len(v) == 1 else v for k, v in entity.items()}


def _ours(dest: Path) -> bool:
    """Whether `dest` holds a crate this module wrote (never delete anyone else's crate)."""
    try:
        graph = json.loads((dest / "ro-crate-metadata.json").read_text(encoding="utf-8")).get("@graph", [])
    except (OSError, ValueError, AttributeError):
        return False
    return any(isinstance(e, dict) and e.get("@id") == "./" and "exported by cuberun" in str(e.get("description")) for e in graph)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text) or "_"


def _time(value: Any) -> str | None:
    """ISO 8601 with a numeric UTC offset ("...T11:27:58.581+00:00"), the form the profiles' validators expect."""
    if not value:
        return None
    text = str(value)
    try:
        when = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        return text
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.isoformat(timespec="milliseconds" if when.microsecond else "seconds")


def _media_type(path: str) -> str:
    suffix = PurePosixPath(path).suffix.lower()
    return EXTRA_TYPES.get(suffix) or mimetypes.guess_type(path)[0] or "application/octet-stream"


def _file_uri(path: str) -> str:
    p = Path(path)
    if not p.is_absolute():
        p = p.absolute()
    return p.as_uri()


def _env(record: dict[str, Any], key: str) -> Any:
    env = record.get("environment")
    return env.get(key) if isinstance(env, dict) else None


def _failure(record: dict[str, Any]) -> str:
    """'<status> (exit code N): <last line of the task's log>'."""
    status = record.get("status") or "unknown"
    code = record.get("exit_code")
    text = f"{status} (exit code {code})" if code is not None else str(status)
    log = _log_path(record)
    if log is not None:
        try:
            with log.open("rb") as f:
                f.seek(max(0, log.stat().st_size - 4096))
                tail = [line.strip() for line in f.read().decode("utf-8", errors="replace").splitlines() if line.strip()]
        except OSError:
            tail = []
        if tail:
            text += f": {tail[-1][:300]}"
    return text


def _values(record: dict[str, Any]) -> list[tuple[str, str]]:
    """Sweep values and overrides that are not parameter paths (those are data entities already)."""
    params = _dict(record.get("parameters"))
    out: dict[str, str] = {}
    for field in ("overrides", "sweep"):
        value = record.get(field)
        items = value.items() if isinstance(value, dict) else (str(v).partition("=")[::2] for v in _list(value))
        out.update({str(k): str(v) for k, v in items if k not in params})
    return sorted(out.items())


def _agent(crate: _Crate, record: dict[str, Any]) -> dict[str, str] | None:
    user = _env(record, "user") or record.get("user")
    if not user:
        return None
    host = _env(record, "host") or record.get("host")
    name = f"uid {user}" if str(user).isdigit() else str(user)
    person = crate.add(
        {
            "@id": f"#person-{_slug(str(user))}",
            "@type": "Person",
            "name": name,
            "description": f"The account that ran cuberun{f' on host {host}' if host else ''}",
        }
    )
    return _ref(person)


def _container_image(crate: _Crate, record: dict[str, Any], action_id: str) -> dict[str, str] | None:
    fp = record.get("runner_fingerprint")
    if not isinstance(fp, dict):
        return None
    found = _runner_image(fp.get("runner") or record.get("runner"), fp)
    if found is None:
        return None
    image, image_id = found
    registry, name, tag = _split_image(image)
    entity: Entity = {
        "@id": f"#image-{_slug(image)}",
        "@type": "ContainerImage",
        "additionalType": {"@id": "https://w3id.org/ro/terms/workflow-run#DockerImage"},
        "name": name,
        "registry": registry,
        "tag": tag,
    }
    if image_id.startswith("sha256:"):
        entity["sha256"] = image_id.removeprefix("sha256:")
    crate.add(_prune(entity))
    return {"@id": entity["@id"]}


def _runner_image(runner: Any, fp: dict[str, Any]) -> tuple[str, str] | None:
    """The container image a run used, as its runner reads its own fingerprint (Runner.container_image)."""
    from cuberun.errors import CuberunError
    from cuberun.runners import registry

    if not isinstance(runner, str):
        return None
    try:
        return registry.get(runner).container_image(fp)
    except CuberunError:
        return None


def _split_image(image: str) -> tuple[str, str, str | None]:
    ref = image.split("@", 1)[0]
    first, _, rest = ref.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, ref = first, rest
    else:
        registry = "docker.io"
    name, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "")
    return registry, name, tag or None


def _log_path(record: dict[str, Any]) -> Path | None:
    candidates = []
    if record.get("log"):
        candidates.append(Path(str(record["log"])))
    if record.get("workspace") and record.get("run_id"):
        candidates.append(Path(str(record["workspace"])) / ".cuberun" / "runs" / str(record["run_id"]) / "output.log")
    return next((c for c in candidates if c.is_file()), None)
