"""The legacy MLBox formats: detect them and convert them into an equivalent config-2.0 cube.

Formats (contract section 7):

- ``mlbox-poc``: the MLBox proof of concept. ``mlbox.yaml`` names the tasks and their inputs and
  outputs; ``implementation/mlbox_implementation.yaml`` says how to run them (``direct_python``
  with ``main_file``, ``python`` with ``entrypoint``, or ``docker`` with ``image``/``command``/
  ``args``); ``tasks/<task>/<set>.yaml`` are parameter sets binding every input and output to a
  path relative to ``<box>/workspace``. The program receives the task as ``--mlbox_task=<task>``.
- ``mlbox-0.1``: the same layout as described in the original project documents (``mlbox.yaml``
  with ``type: mlbox``; the docker recipe in ``implementation/docker/dockerfiles/Dockerfile`` with
  the box root as its build context).
- ``1.0``: config 1.0, "MLCommons Box" / MLCube v1. A root file (``mlcube.yaml`` or
  ``mlbox.yaml``, ``schema_type: mlcube_root|mlbox_root``) lists task files; ``run/[<set>/]<task>.yaml``
  bind the parameters with ``$WORKSPACE``; ``platforms/*.yaml`` configure the runners. The task
  name is the first positional argument, as in config 2.0.
- ``pre-2.0``: the intermediate ``.mlcube.yaml`` (tasks with a list of ``{name, type, io}``).

The conversion keeps what the legacy program expects: a proof-of-concept task becomes a task
``entrypoint`` ending in ``--mlbox_task=<task>`` (so no positional task name is added), and a
bare-metal box gets a ``local:`` section with the command and the working directory the MLBox
runner used. Whatever cannot be expressed in config 2.0 is listed in ``Conversion.notes``.

Modules: formats.py (the formats, `Conversion`, detection), convert.py (`convert`: one converter
made of base.py (what every format shares), mlbox.py, v1.py and pre2.py (one format each)),
bindings.py (parameter bindings in the legacy files), paramsets.py (parameter sets and the
`BOX[:TASK[/PARAMSET]]` syntax), migrate.py (`cuberun migrate`'s output).
"""

from cuberun.spec.legacy.base import strip_workspace
from cuberun.spec.legacy.convert import convert, convert_loaded
from cuberun.spec.legacy.formats import (
    FORMAT_MLBOX,
    FORMAT_POC,
    FORMAT_PRE2,
    FORMAT_V1,
    IMPLEMENTATION_FILE,
    POC_DOCKERFILE,
    Conversion,
    detect,
    detect_data,
    find_root_file,
)
from cuberun.spec.legacy.migrate import default_output, migrated_text
from cuberun.spec.legacy.paramsets import BoxRef, ParamSet, paramset, paramset_overrides, parse_box_ref, split_run_args

__all__ = [
    "FORMAT_MLBOX",
    "FORMAT_POC",
    "FORMAT_PRE2",
    "FORMAT_V1",
    "IMPLEMENTATION_FILE",
    "POC_DOCKERFILE",
    "BoxRef",
    "Conversion",
    "ParamSet",
    "convert",
    "convert_loaded",
    "default_output",
    "detect",
    "detect_data",
    "find_root_file",
    "migrated_text",
    "paramset",
    "paramset_overrides",
    "parse_box_ref",
    "split_run_args",
    "strip_workspace",
]
