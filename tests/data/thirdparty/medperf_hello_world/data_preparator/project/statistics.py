"""Length statistics of the prepared names (nothing that identifies a person)."""
import argparse
import os

import pandas as pd
import yaml

parser = argparse.ArgumentParser("MedPerf Statistics Example")
parser.add_argument("--data_path", dest="data")
parser.add_argument("--out_file", dest="out_file")
args = parser.parse_args()
names = pd.read_csv(os.path.join(args.data, "names.csv"))
stats = {}
for column in ("First Name", "Last Name"):
    lengths = names[column].str.len()
    stats[column] = {"length mean": float(lengths.mean()), "length std": float(lengths.std()),
                     "length min": int(lengths.min()), "length max": int(lengths.max())}
stats["size"] = len(names)
with open(args.out_file, "w") as f:
    yaml.dump(stats, f)
