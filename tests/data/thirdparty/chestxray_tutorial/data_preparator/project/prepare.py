"""Resize every image, save it as .npy, and one-hot encode its label."""
import csv
import os

import numpy as np
from PIL import Image
from tqdm import tqdm


def prepare_dataset(data_path, labels_path, parameters, output_path, output_labels_path):
    classes = parameters["labels_list"]
    size = parameters["image_output_size"]
    with open(os.path.join(labels_path, "labels.csv")) as stream:
        for row in tqdm(list(csv.DictReader(stream))):
            image_id = row[parameters["image_column_id"]]
            image = Image.open(os.path.join(data_path, f"{image_id}.png")).resize(tuple(size[:-1]))
            np.save(os.path.join(output_path, f"{image_id}.npy"), np.expand_dims(np.asarray(image), -1))
            onehot = np.eye(len(classes), dtype=int)[classes.index(row[parameters["label_column_id"]])]
            np.save(os.path.join(output_labels_path, f"{image_id}.npy"), onehot)
