"""Number of cases and of each label."""
import os

import numpy as np
import yaml


def generate_statistics(data_path, labels_path, parameters, out_path):
    labels = np.stack([np.load(os.path.join(labels_path, name)) for name in sorted(os.listdir(labels_path))])
    counts = labels.sum(axis=0)
    statistics = {"num_cases": len(os.listdir(data_path)),
                  "labels_count": {label: int(counts[i]) for i, label in enumerate(parameters["labels_list"])}}
    with open(out_path, "w") as f:
        yaml.safe_dump(statistics, f)
