"""Export run records as Workflow Run RO-Crates (JSON-LD) that third-party tools can read.

`export_ro_crate` writes a Process Run Crate (https://w3id.org/ro/wfrun/process/0.5) for one task run;
`export_invocation_crate` writes a Provenance Run Crate (https://w3id.org/ro/wfrun/provenance/0.5) for every
task run of one `cuberun run` command: the cube is the ComputationalWorkflow, each task a tool and a step.

Data entities are not copied: inputs and outputs may be huge, so they are referenced by absolute `file://`
URIs with the size and SHA-256 the record took at run time (`sdDatePublished` says when). Only the run record,
the task's log and (for an invocation) the mlcube.yaml are copied into the crate. See docs/report.md.

`terms` holds the vocabulary and the record helpers, `crate` builds one crate's entities and writes its
files, `export` puts the crates of a run or of an invocation together.
"""

from __future__ import annotations

from cuberun.provenance.export import export_invocation_crate, export_ro_crate, invocation_records
from cuberun.provenance.terms import (
    CONTEXT,
    EXTRA_TYPES,
    MLCUBE_LANGUAGE,
    NOT_SPECIFIED_LICENSE,
    PROCESS_PROFILE,
    PROFILE_NAMES,
    PROVENANCE_PROFILE,
    RO_CRATE,
    SCHEMA,
    STATUS,
    WORKFLOW_PROFILE,
    WORKFLOW_RO_CRATE,
    Entity,
)

__all__ = [
    "CONTEXT",
    "EXTRA_TYPES",
    "MLCUBE_LANGUAGE",
    "NOT_SPECIFIED_LICENSE",
    "PROCESS_PROFILE",
    "PROFILE_NAMES",
    "PROVENANCE_PROFILE",
    "RO_CRATE",
    "SCHEMA",
    "STATUS",
    "WORKFLOW_PROFILE",
    "WORKFLOW_RO_CRATE",
    "Entity",
    "export_invocation_crate",
    "export_ro_crate",
    "invocation_records",
]
