"""Split raw names into first and last name; copy the labels next to them."""
import argparse
import os
import shutil

import pandas as pd

parser = argparse.ArgumentParser("Medperf Data Preparator Example")
parser.add_argument("--names_path", dest="names")
parser.add_argument("--labels_path", dest="labels")
parser.add_argument("--out", dest="out")
args = parser.parse_args()

source = next(os.path.join(args.names, f) for f in sorted(os.listdir(args.names)) if f.endswith(".csv"))
names = pd.read_csv(source, usecols=["Name"])
words = names["Name"].str.split()
prepared = pd.DataFrame({"First Name": words.str[0], "Last Name": words.str[-2]})
prepared.to_csv(os.path.join(args.out, "names.csv"), index=False)
shutil.copyfile(os.path.join(args.labels, "labels.csv"), os.path.join(args.out, "labels.csv"))
