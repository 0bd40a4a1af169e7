"""The intermediate pre-2.0 `.mlcube.yaml` (tasks with lists of `{name, type, io}`)."""

from __future__ import annotations

from typing import Any

from cuberun.spec.legacy.base import _Base, _param
from cuberun.spec.legacy.bindings import _pre2_bindings
from cuberun.spec.model import DIRECTORY, FILE, INPUT, OUTPUT
from cuberun.yamlio import Document, KeyPath


class _Pre2(_Base):
    """pre-2.0 MLCube."""

    # -- pre-2.0 ------------------------------------------------------------------------------------
    def config_pre2(self, doc: Document) -> dict[str, Any]:
        config = self.metadata(doc)
        for key in ("platform", "docker", "singularity"):
            if isinstance(doc.data.get(key), dict):
                config[key] = doc.data[key]
        tasks: dict[str, Any] = {}
        for tname, body in (doc.data.get("tasks") or {}).items():
            path: KeyPath = ("tasks", tname)
            if not isinstance(body, dict):
                self.issues.append(doc.issue(path, "a task must be a mapping with 'parameters'", value=True))
                continue
            raw_sets = body.get("tasks")
            sets: dict[str, Any] = raw_sets if isinstance(raw_sets, dict) else {}
            chosen = tname if tname in sets else next(iter(sets), None)
            bound = _pre2_bindings(sets[chosen]) if chosen is not None else {}
            params: dict[str, Any] = {}
            plist = body.get("parameters")
            if isinstance(plist, dict):  # a config-2.0 task among pre-2.0 ones
                tasks[tname] = body
                continue
            for j, spec in enumerate(plist or []):
                ppath: KeyPath = (*path, "parameters", j)
                if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or spec.get("io") not in (INPUT, OUTPUT):
                    self.issues.append(doc.issue(ppath, "must be a mapping {name, type, io: input|output}", value=True))
                    continue
                pname, io, ptype = spec["name"], spec["io"], spec.get("type")
                if ptype not in (FILE, DIRECTORY):
                    self.issues.append(doc.issue((*ppath, "type"), f"type of '{pname}' must be 'file' or 'directory'", value=True))
                    continue
                params.setdefault(io + "s", {})[pname] = _param(bound.get(pname) or pname, ptype)
            entry = body.get("entrypoint")
            tasks[tname] = {**({"entrypoint": entry} if isinstance(entry, str) else {}), **({"parameters": params} if params else {})}
            self.mark(path, doc, path)
        if "docker" not in config:
            self.notes.append("no docker section: add docker.image to run in a container")
        config["tasks"] = tasks
        return config
