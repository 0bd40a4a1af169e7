"""`cuberun migrate`: the converted cube as config-2.0 text, and where it goes."""

from __future__ import annotations

from pathlib import Path

from cuberun.spec.legacy.formats import (
    CUBE_FILE,
    FORMAT_MLBOX,
    FORMAT_POC,
    FORMAT_V1,
    Conversion,
)


# -- migrate ----------------------------------------------------------------------------------------
def migrated_text(conversion: Conversion) -> str:
    """The config-2.0 file: a header naming the source format and what was not carried over."""
    from cuberun import yamlio

    sources = ", ".join(Path(s).relative_to(conversion.root).as_posix() if Path(s).is_relative_to(conversion.root) else str(s)
                        for s in conversion.sources)
    lines = [
        f"# Config 2.0, converted by `cuberun migrate` from the {conversion.label} files here:",
        f"#   {sources}",
    ]
    if conversion.format in (FORMAT_POC, FORMAT_MLBOX, FORMAT_V1):
        lines.append("# Parameter sets stay where they are: `cuberun run DIR:TASK/SET` still applies them.")
    if conversion.notes:
        lines.append("# Not carried over:")
        lines += [f"#   - {n}" for n in conversion.notes]
    if conversion.assumptions:
        lines.append("# Assumed (check these):")
        lines += [f"#   - {n}" for n in conversion.assumptions]
    return "\n".join(lines) + "\n" + yamlio.dump(conversion.config)


def default_output(conversion: Conversion) -> Path:
    """mlcube.yaml next to the legacy files, or mlcube.v2.yaml when mlcube.yaml IS the legacy root."""
    target = conversion.root / CUBE_FILE
    if target.resolve() == conversion.file.resolve():
        return conversion.root / "mlcube.v2.yaml"
    return target
