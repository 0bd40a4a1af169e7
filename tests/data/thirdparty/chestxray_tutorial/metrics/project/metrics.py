"""Mean per-class accuracy at a threshold, and mean per-class ROC AUC (rank statistic)."""
import json
import os

import numpy as np
import yaml


def auc(truth, score):
    positives, negatives = score[truth == 1], score[truth == 0]
    if not len(positives) or not len(negatives):
        return None
    wins = (positives[:, None] > negatives[None, :]).sum() + 0.5 * (positives[:, None] == negatives[None, :]).sum()
    return wins / (len(positives) * len(negatives))


def calculate_metrics(labels, predictions, parameters, output_path):
    with open(os.path.join(predictions, "predictions.json")) as f:
        scores = json.load(f)
    truth = np.stack([np.load(os.path.join(labels, f"{case}.npy")) for case in scores])
    score = np.stack([scores[case] for case in scores])
    accuracy = float(np.mean([np.mean((score[:, c] > parameters["threshold"]) == truth[:, c]) for c in range(truth.shape[1])]))
    aucs = [a for c in range(truth.shape[1]) if (a := auc(truth[:, c], score[:, c])) is not None]
    with open(output_path, "w") as f:
        yaml.safe_dump({"Accuracy": accuracy, "AUC": float(sum(aucs) / truth.shape[1])}, f)
