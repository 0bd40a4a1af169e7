"""Accuracy of each label column, rows matched on the id column."""
import argparse

import pandas as pd
import yaml


def aligned(frame, params):
    columns = params["label columns"] + [params["id column"]]
    return frame[columns].set_index(params["id column"]).sort_index()


def main():
    parser = argparse.ArgumentParser()
    for name in ("--labels_csv", "--preds_csv", "--output_file", "--parameters_file"):
        parser.add_argument(name, required=True)
    args = parser.parse_args()
    with open(args.parameters_file) as f:
        params = yaml.safe_load(f)
    labels = aligned(pd.read_csv(args.labels_csv), params)
    preds = aligned(pd.read_csv(args.preds_csv), params)
    results = {}
    for metric in params["metrics"]:
        if metric != "ACC":
            raise SystemExit(f"unknown metric {metric}")
        results[metric] = {column: float((labels[column] == preds[column]).mean()) for column in labels.columns}
    with open(args.output_file, "w") as f:
        yaml.dump(results, f)


if __name__ == "__main__":
    main()
