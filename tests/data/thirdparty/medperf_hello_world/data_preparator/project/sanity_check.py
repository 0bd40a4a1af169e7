"""The prepared names have exactly two columns and no empty field."""
import argparse
import os

import pandas as pd

parser = argparse.ArgumentParser("Medperf Data Sanity Check Example")
parser.add_argument("--data_path", dest="data")
args = parser.parse_args()
names = pd.read_csv(os.path.join(args.data, "names.csv"))
assert names.columns.tolist() == ["First Name", "Last Name"], "column mismatch"
assert names.isna().sum().sum() == 0, "there are empty fields"
print("sanity check passed")
