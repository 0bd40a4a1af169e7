"""RO-Crate export of run records, read back with a third-party reader (ro-crate-py's `rocrate`)."""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest

from cuberun.errors import CuberunError
from cuberun.provenance import (
    PROCESS_PROFILE,
    PROVENANCE_PROFILE,
    WORKFLOW_PROFILE,
    WORKFLOW_RO_CRATE,
    export_invocation_crate,
    export_ro_crate,
    invocation_records,
)
from cuberun.records import list_runs
from tests.conftest import CLI, EXAMPLES

rocrate = pytest.importorskip("rocrate.rocrate", reason="the test extra installs rocrate (ro-crate-py)")
SCHEMA = "http://schema.org/"


def ids(value: Any) -> list[str]:
    """The @ids of a rocrate property value (an entity, a list of them, or None)."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [item.id if hasattr(item, "id") else str(item) for item in items]


def many(value: Any) -> list[Any]:
    """A property value as a list (RO-Crate writes one value without a list)."""
    return value if isinstance(value, list) else ([] if value is None else [value])


def of_type(crate: Any, kind: str) -> list[Any]:
    return [e for e in crate.get_entities() if kind in (e.type if isinstance(e.type, list) else [e.type])]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def container_record(
    tmp_path: Path, *, status: str = "succeeded", exit_code: int = 0, log: str = "epoch 1: loss 0.5\ndone\n"
) -> dict[str, Any]:
    """A realistic record of a Docker run of a sweep variant, as `cuberun run --sweep` writes it."""
    ws = tmp_path / "my workspace"
    (ws / "data").mkdir(parents=True)
    (ws / "data" / "digits.npz").write_bytes(b"\x00" * 64)
    params = ws / "sweeps" / "lr=0.003" / "params.yaml"
    params.parent.mkdir(parents=True)
    params.write_text("train: {learning_rate: 0.003}\n", encoding="utf-8")
    run_id = "20261122-113358-train-f146f5"
    folder = ws / ".cuberun" / "runs" / run_id
    folder.mkdir(parents=True)
    (folder / "output.log").write_text(log, encoding="utf-8")
    model = ws / "sweeps" / "lr=0.003" / "model"
    command = ["docker", "run", "--rm", "--network", "none", "ghcr.io/acme/digits:0.1", "train", f"--params={params}"]
    record: dict[str, Any] = {
        "run_id": run_id,
        "invocation_id": "20261122-113358-run-112f73",
        "status": status,
        "start": "2026-11-22T11:33:58.120Z",
        "end": "2026-11-22T11:34:05.650Z",
        "duration_s": 7.53,
        "exit_code": exit_code,
        "cube": {"name": "digits", "version": "0.1", "path": str(tmp_path / "cube" / "mlcube.yaml"), "root": str(tmp_path / "cube")},
        "task": "train",
        "platform": "docker",
        "runner": "docker",
        "workspace": str(ws),
        "parameters": {
            "data_dir": {"io": "input", "type": "directory", "path": str(ws / "data")},
            "params": {"io": "input", "type": "file", "path": str(params)},
            "model_dir": {"io": "output", "type": "directory", "path": str(model)},
        },
        "overrides": {"params": str(params), "model_dir": str(model)},
        "sweep": {"train.mlp.learning_rate": "0.003"},
        "inputs": {
            "data_dir": {"path": str(ws / "data"), "type": "directory", "sha256": "ab" * 32, "files": 1, "bytes": 64},
            "params": {"path": str(params), "type": "file", "sha256": sha256(params), "files": 1, "bytes": params.stat().st_size},
        },
        "runner_fingerprint": {"runner": "docker", "image": "ghcr.io/acme/digits:0.1", "image_id": "sha256:" + "cd" * 32},
        "steps": [{"purpose": "run", "argv": command, "cwd": str(ws), "env": {"OMP_NUM_THREADS": "2", "CUBERUN_TOKEN": "***"}}],
        "command": command,
        "environment": {"host": "gpu-box", "user": "alice", "os": "Linux", "python": "3.11.7", "cuberun_version": "0.1.0"},
        "log": str(folder / "output.log"),
    }
    if status == "succeeded":
        record["outputs"] = {"model_dir": {"path": str(model), "type": "directory", "sha256": "ef" * 32, "files": 2, "bytes": 6094}}
    return record


def test_process_run_crate_of_a_container_sweep_run(tmp_path: Path) -> None:
    record = container_record(tmp_path)
    dest = export_ro_crate(record, tmp_path / "crate")
    assert dest == tmp_path / "crate"
    crate = rocrate.ROCrate(dest)

    root = crate.root_dataset
    assert ids(root["conformsTo"]) == [PROCESS_PROFILE]
    assert root["name"] and root["datePublished"] and root["license"]
    actions = of_type(crate, "CreateAction")
    assert len(actions) == 1
    action = actions[0]
    assert ids(root["mentions"]) == [action.id]
    assert record["run_id"] in action["name"]
    assert action["startTime"] == "2026-11-22T11:33:58.120+00:00"
    assert action["endTime"] == "2026-11-22T11:34:05.650+00:00"
    assert action["actionStatus"] == SCHEMA + "CompletedActionStatus"
    assert action.get("error") is None
    assert action["description"] == shlex.join(record["command"])

    tool = action["instrument"]
    assert tool.type == "SoftwareApplication"
    assert tool["name"] == "digits train" and tool["softwareVersion"] == "0.1"
    assert action["agent"].type == "Person" and action["agent"]["name"] == "alice"

    objects = {e.id: e for e in many(action["object"])}
    params_uri = Path(record["parameters"]["params"]["path"]).as_uri()
    assert "%3D" in params_uri and "%20" in params_uri  # '=' and ' ' in the path are escaped
    params = objects[params_uri]
    assert params.type == "File"
    assert params["sha256"] == record["inputs"]["params"]["sha256"]
    assert params["contentSize"] == str(record["inputs"]["params"]["bytes"])
    assert params["alternateName"] == record["parameters"]["params"]["path"]
    assert params["sdDatePublished"] == action["startTime"]
    data = objects[Path(record["parameters"]["data_dir"]["path"]).as_uri() + "/"]
    assert data.type == "Dataset" and data["identifier"] == "cuberun-tree-sha256:" + "ab" * 32
    values = [e for e in objects.values() if e.type == "PropertyValue"]
    assert [(v["name"], v["value"]) for v in values] == [("train.mlp.learning_rate", "0.003")]  # path overrides are entities

    results = many(action["result"])
    assert [(e.type, e["contentSize"]) for e in results] == [("Dataset", "6094")]
    assert results[0]["sdDatePublished"] == action["endTime"]

    image = action["containerImage"]
    assert image.type == "ContainerImage"
    assert (image["registry"], image["name"], image["tag"], image["sha256"]) == ("ghcr.io", "acme/digits", "0.1", "cd" * 32)
    env = action["environment"]
    assert {e["name"]: e["value"] for e in many(env)} == {"OMP_NUM_THREADS": "2", "CUBERUN_TOKEN": "***"}

    # the log and the record travel inside the crate, described as files about the action
    log, rec = crate.get("output.log"), crate.get("record.json")
    assert log.type == "File" and rec.type == "File"
    assert ids(log["about"]) == [action.id] == ids(rec["about"])
    assert (dest / "output.log").read_text(encoding="utf-8") == Path(record["log"]).read_text(encoding="utf-8")
    assert json.loads((dest / "record.json").read_text(encoding="utf-8")) == record
    assert (dest / "README.md").is_file()
    # every data entity is reachable from the root
    parts = set(ids(root["hasPart"]))
    assert {params.id, data.id, results[0].id, "output.log", "record.json"} <= parts


def test_failed_run_is_a_failed_action_with_the_error_and_no_result(tmp_path: Path) -> None:
    record = container_record(tmp_path, status="failed", exit_code=1, log="loading data\ndigits train: error: bad learning rate\n")
    crate = rocrate.ROCrate(export_ro_crate(record, tmp_path / "crate"))
    (action,) = of_type(crate, "CreateAction")
    assert action["actionStatus"] == SCHEMA + "FailedActionStatus"
    assert action["error"] == "failed (exit code 1): digits train: error: bad learning rate"
    assert action.get("result") is None
    assert len(ids(action["object"])) == 3  # the inputs are still what it read


def test_a_minimal_record_without_the_newer_fields_exports(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    record = {
        "run_id": "20261122-112902-hello-80457a",
        "status": "succeeded",
        "start": "2026-11-22T11:29:02.100Z",
        "end": "2026-11-22T11:29:02.900Z",
        "exit_code": 0,
        "task": "hello",
        "parameters": {
            "name": {"io": "input", "type": "file", "path": str(ws / "names" / "alice.txt")},
            "chat": {"io": "output", "type": "file", "path": str(ws / "chats" / "chat.txt")},
        },
    }
    crate = rocrate.ROCrate(export_ro_crate(record, tmp_path / "crate"))
    (action,) = of_type(crate, "CreateAction")
    assert action.get("agent") is None
    assert [e.type for e in many(action["object"])] == ["File"]
    assert many(action["object"])[0].get("sha256") is None  # nothing claimed that the record did not say
    assert crate.get("output.log") is None and crate.get("record.json") is not None
    invocation = rocrate.ROCrate(export_invocation_crate([record], tmp_path / "inv"))
    assert ids(invocation.root_dataset["conformsTo"]) == [PROCESS_PROFILE]  # no cube file: no workflow to claim
    assert invocation.mainEntity is None
    assert [a.id for a in of_type(invocation, "CreateAction")] == [f"#run-{record['run_id']}"]
    assert invocation_records([record], record) == [record]


def test_destination_rules(tmp_path: Path) -> None:
    record = container_record(tmp_path)
    other = tmp_path / "someone-elses"
    other.mkdir()
    (other / "ro-crate-metadata.json").write_text('{"@graph": [{"@id": "./", "description": "theirs"}]}', encoding="utf-8")
    with pytest.raises(CuberunError, match="not an empty directory"):
        export_ro_crate(record, other)
    assert (other / "ro-crate-metadata.json").read_text(encoding="utf-8").endswith('"theirs"}]}')
    with pytest.raises(CuberunError, match="no run records"):
        export_invocation_crate([], tmp_path / "none")
    dest = export_invocation_crate([record], tmp_path / "crate")
    ours = sorted(p.relative_to(dest) for p in dest.rglob("*") if p.is_file())
    assert Path("runs") in {p.parents[-2] for p in ours if len(p.parts) > 1}
    (dest / "notes.txt").write_text("the user's own file", encoding="utf-8")
    (dest / "runs" / "mine.txt").write_text("also the user's", encoding="utf-8")
    export_ro_crate(record, dest)  # an export of ours is replaced: its files, never anyone else's
    assert (dest / "notes.txt").read_text(encoding="utf-8") == "the user's own file"
    assert (dest / "runs" / "mine.txt").read_text(encoding="utf-8") == "also the user's"
    left = sorted(p.relative_to(dest) for p in dest.rglob("*") if p.is_file())
    assert left == sorted([Path("README.md"), Path("notes.txt"), Path("output.log"), Path("record.json"),
                           Path("ro-crate-metadata.json"), Path("runs/mine.txt")]), left
    assert rocrate.ROCrate(dest).get("record.json") is not None


def test_hello_world_runs_export_process_and_provenance_crates(cli: CLI, tmp_path: Path) -> None:
    cube = tmp_path / "hello_world"
    shutil.copytree(EXAMPLES / "hello_world", cube, ignore=shutil.ignore_patterns(".cuberun", "chats"))
    result = cli("run", f"--mlcube={cube}", "--task=hello,bye")
    assert result.returncode == 0, result.stderr
    ws = cube / "workspace"
    runs = list_runs(ws)
    assert [r["task"] for r in runs] == ["hello", "bye"]
    chat = ws / "chats" / "chat_with_alice.txt"

    single = rocrate.ROCrate(export_ro_crate(runs[1], tmp_path / "bye-crate"))
    (action,) = of_type(single, "CreateAction")
    assert action["actionStatus"] == SCHEMA + "CompletedActionStatus"
    (produced,) = many(action["result"])
    assert produced.id == chat.as_uri() and produced["sha256"] == sha256(chat)
    assert (tmp_path / "bye-crate" / "output.log").read_text(encoding="utf-8") == Path(runs[1]["log"]).read_text(encoding="utf-8")

    assert invocation_records(runs, runs[0]) == runs
    dest = export_invocation_crate(runs, tmp_path / "invocation")
    crate = rocrate.ROCrate(dest)
    root = crate.root_dataset
    assert set(ids(root["conformsTo"])) == {PROCESS_PROFILE, WORKFLOW_PROFILE, PROVENANCE_PROFILE, WORKFLOW_RO_CRATE}
    workflow = crate.mainEntity
    assert workflow.id == "mlcube.yaml"
    assert {"File", "SoftwareSourceCode", "ComputationalWorkflow", "HowTo"} <= set(workflow.type)
    assert (dest / "mlcube.yaml").read_bytes() == (cube / "mlcube.yaml").read_bytes()
    assert workflow["programmingLanguage"]["name"] == "MLCube"
    assert ids(workflow["hasPart"]) == ["#task-hello", "#task-bye"]
    steps = many(workflow["step"])
    assert [(s.type, s["position"], s["workExample"].id) for s in steps] == [
        ("HowToStep", "0", "#task-hello"),
        ("HowToStep", "1", "#task-bye"),
    ]

    actions = {a["instrument"].id: a for a in of_type(crate, "CreateAction")}
    assert set(actions) == {"mlcube.yaml", "#task-hello", "#task-bye"}
    run_of_cube = actions["mlcube.yaml"]
    assert run_of_cube["actionStatus"] == SCHEMA + "CompletedActionStatus"
    assert run_of_cube["startTime"] == actions["#task-hello"]["startTime"] and run_of_cube["endTime"] == actions["#task-bye"]["endTime"]
    # both tasks append to the same file: two versions, told apart by content, both named by the path
    hello_out = actions["#task-hello"]["result"]
    bye_out = actions["#task-bye"]["result"]
    assert hello_out.id == chat.as_uri()
    assert bye_out.id.startswith(chat.as_uri() + "#sha256=") and bye_out["alternateName"] == str(chat)
    assert bye_out["sha256"] == sha256(chat) != hello_out["sha256"]

    controls = of_type(crate, "ControlAction")
    assert sorted((c["instrument"].id, c["object"].id) for c in controls) == sorted(
        [("#step-hello", actions["#task-hello"].id), ("#step-bye", actions["#task-bye"].id)]
    )
    (organize,) = of_type(crate, "OrganizeAction")
    assert organize["instrument"]["name"] == "cuberun"
    assert organize["result"].id == run_of_cube.id
    assert sorted(ids(organize["object"])) == sorted(c.id for c in controls)
    for r in runs:
        assert (dest / "runs" / r["run_id"] / "record.json").is_file()
        assert crate.get(f"runs/{r['run_id']}/output.log")["about"].id == f"#run-{r['run_id']}"
