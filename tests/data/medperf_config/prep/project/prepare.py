"""Normalise every raw text record: strip it, fold case, keep it if long enough."""
import os
import pathlib

import yaml

VOL = pathlib.Path("/mlcommons/volumes")
params = yaml.safe_load((VOL / "parameters" / "parameters_file.yaml").read_text()) or {}
min_len = int(params.get("min_length", 1))
suffix = os.environ.get("PREP_SUFFIX", "")
kept = 0
for src in sorted((VOL / "raw_data").glob("*.txt")):
    text = src.read_text().strip().lower()
    if len(text) >= min_len:
        (VOL / "data" / (src.stem + suffix + ".txt")).write_text(text + "\n")
        kept += 1
for src in sorted((VOL / "raw_labels").glob("*.txt")):
    (VOL / "labels" / src.name).write_text(src.read_text().strip() + "\n")
print(f"prepared {kept} records as uid {os.getuid()}")
