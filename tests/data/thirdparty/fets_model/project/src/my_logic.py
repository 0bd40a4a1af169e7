"""Segment each case: threshold the mean of its four modalities (a stand-in for a real network)."""
import gzip
from pathlib import Path

import numpy as np

MODALITIES = ("t1", "t1ce", "t2", "flair")


def run_inference(data_path, output_path, checkpoint_path, application_name, application_version):
    threshold = float((Path(checkpoint_path) / "threshold.txt").read_text())
    print(f"{application_name} {application_version}: threshold {threshold} from {checkpoint_path}")
    for case in sorted(p for p in Path(data_path).iterdir() if p.is_dir()):
        images = [np.frombuffer(gzip.decompress((case / f"{case.name}_brain_{m}.nii.gz").read_bytes()), dtype=np.uint8) for m in MODALITIES]
        mean = np.mean(images, axis=0) / 255.0
        segmentation = (mean > threshold).astype(np.uint8)
        (Path(output_path) / f"{case.name}.nii.gz").write_bytes(gzip.compress(segmentation.tobytes(), mtime=0))
        print(f"segmented {case.name}: {int(segmentation.sum())} voxels")
