"""Images are .npy files with a label of the same name, one-hot over the configured classes."""
import os

import numpy as np


def perform_sanity_checks(data_path, labels_path, parameters):
    images, labels = sorted(os.listdir(data_path)), sorted(os.listdir(labels_path))
    assert all(name.endswith(".npy") for name in images), "images should be .npy"
    assert images == labels, "labels and images should have identical names"
    stacked = np.stack([np.load(os.path.join(labels_path, name)) for name in labels])
    assert stacked.shape[1] == len(parameters["labels_list"]), "labels should be one-hot encoded"
    print("Sanity checks ran successfully.")
