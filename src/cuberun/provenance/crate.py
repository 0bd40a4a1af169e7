"""One crate being built: its entities (runs, tools, data, agents, images) and its files in the destination folder."""

from __future__ import annotations

import json
import os
import shlex
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from cuberun.errors import CuberunError, UsageError
from cuberun.provenance.terms import (
    CONTEXT,
    NOT_SPECIFIED_LICENSE,
    PROFILE_NAMES,
    SCHEMA,
    STATUS,
    Entity,
    _dict,
    _env,
    _failure,
    _file_uri,
    _flat,
    _list,
    _log_path,
    _media_type,
    _prune,
    _ref,
    _slug,
    _time,
    _values,
)


class _Crate:
    def __init__(self, dest: Path, license: str | None) -> None:
        from cuberun.safeio import make_dirs

        dest = Path(dest)
        self.previous = _our_files(dest)  # an earlier export of ours: its files are replaced, nothing else
        if self.previous is None and dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise UsageError(f"{dest} exists and is not an empty directory", hint="export into a new directory")
        make_dirs(dest, what="crate directory", hint="export into a new directory")
        self.dest = dest
        self.written: set[str] = set()
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
        self.put(f"{prefix}record.json", json.dumps(record, indent=2, default=str) + "\n")
        self._part(f"{prefix}record.json", f"cuberun run record of {run_id}", "application/json", action_id, docs="docs/records.md")
        log = _log_path(record)
        if log is not None and self.put(f"{prefix}output.log", source=log):
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
        self.put("README.md", "\n".join(lines))
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
        self.put("ro-crate-metadata.json", text + "\n")
        self._remove_stale()
        return self.dest

    def put(self, rel: str, text: str | None = None, *, source: Path | None = None) -> bool:
        """Write one file of the crate (text, or a copy of `source`); False when `source` cannot be copied."""
        from cuberun.safeio import FileProblem, copy_file, write_file

        target = self.dest / rel
        if source is not None:
            try:
                copy_file(source, target, what="crate file")
            except FileProblem:
                return False
        else:
            write_file(target, text or "", what="crate file", hint="export into a new directory")
        self.written.add(rel)
        return True

    def _remove_stale(self) -> None:
        """Files an earlier export of ours wrote that this one did not: removed (regular files only)."""
        import stat

        for rel in sorted(set(self.previous or ()) - self.written):
            path = self.dest / rel
            try:
                if stat.S_ISREG(os.lstat(path).st_mode):
                    path.unlink()
            except OSError:
                continue
            folder = path.parent
            while folder != self.dest and self.dest in folder.parents:
                try:
                    folder.rmdir()  # only when empty
                except OSError:
                    break
                folder = folder.parent


def _our_files(dest: Path) -> list[str] | None:
    """The files of a crate this module wrote in `dest` (relative paths), or None when `dest`
    holds no crate of ours (never touch anyone else's files)."""
    from cuberun.safeio import read_regular

    try:
        graph = json.loads(read_regular(dest / "ro-crate-metadata.json", 64 << 20).decode("utf-8")).get("@graph", [])
    except (CuberunError, ValueError, AttributeError):
        return None
    if not isinstance(graph, list) or not any(
        isinstance(e, dict) and e.get("@id") == "./" and "exported by cuberun" in str(e.get("description")) for e in graph
    ):
        return None
    files = ["ro-crate-metadata.json"]
    for entity in graph:
        if not isinstance(entity, dict) or not isinstance(entity.get("@id"), str):
            continue
        rel = entity["@id"]
        types = entity.get("@type")
        types = types if isinstance(types, list) else [types]
        if "File" not in types or rel.startswith(("#", "/", ".")) or ":" in rel or any(p in ("", "..") for p in rel.split("/")):
            continue
        files.append(rel)
    return files


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
