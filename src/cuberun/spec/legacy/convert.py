"""A legacy cube converted: one converter for every format, and the entry points (`convert`,
`convert_loaded`)."""

from __future__ import annotations

import os
from pathlib import Path

from cuberun.errors import Issue, SpecError
from cuberun.spec.legacy.formats import (
    CUBE_FILE,
    FORMAT_PRE2,
    FORMAT_V1,
    Conversion,
    detect,
    detect_data,
    find_root_file,
)
from cuberun.spec.legacy.mlbox import _MLBox
from cuberun.spec.legacy.pre2 import _Pre2
from cuberun.spec.legacy.v1 import _V1
from cuberun.yamlio import Document


class _Converter(_MLBox, _V1, _Pre2):
    """One conversion of any legacy format."""

    def run(self, doc: Document) -> Conversion:
        if doc.data is None:
            raise SpecError([Issue("the file is empty", doc.file, hint="a legacy MLBox root file needs 'name' and 'tasks'")])
        if not isinstance(doc.data, dict):
            raise SpecError([doc.issue((), f"the top level must be a mapping, not {type(doc.data).__name__}", value=True)])
        if self.fmt == FORMAT_V1:
            config = self.config_v1(doc)
        elif self.fmt == FORMAT_PRE2:
            config = self.config_pre2(doc)
        else:
            config = self.config_mlbox(doc)
        if self.issues:
            raise SpecError(self.issues)
        return Conversion(self.fmt, self.root, self.file, config, self.notes, self.assumptions, list(dict.fromkeys(self.sources)), self.marks)


def convert_loaded(file: Path, doc: Document) -> Conversion | None:
    """Convert an already loaded root file when it is a legacy format; None for config 2.0."""
    fmt = detect_data(doc.data, file)
    if fmt is None:
        return None
    return _Converter(file, fmt).run(doc)


def convert(path: Path) -> Conversion:
    """Convert the legacy cube in a directory (or with this root file); SpecError if there is none."""
    from cuberun import yamlio

    path = Path(os.path.abspath(os.path.expanduser(str(path))))
    if path.is_dir():
        found = detect(path)
        root_file = found[1] if found else find_root_file(path)
        if root_file is None and (path / CUBE_FILE).is_file():
            root_file = path / CUBE_FILE  # config 2.0, or a file with a syntax error: loading it says which
        if root_file is None:
            raise SpecError([Issue(f"no legacy cube in {path}", hint="expected mlbox.yaml, or an mlcube.yaml with schema_type: mlcube_root")])
        path = root_file
    if not path.exists():
        raise SpecError([Issue(f"{path} does not exist", hint="pass the legacy cube's directory")])
    doc = yamlio.load(path, "cube file")
    conversion = convert_loaded(path, doc)
    if conversion is None:
        raise SpecError([Issue("already a config-2.0 cube", str(path), hint="there is nothing to migrate")])
    return conversion
