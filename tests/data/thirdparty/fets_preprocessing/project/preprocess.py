"""Copy the input file named in the parameters file to the output folder under its new name."""
import argparse
import pathlib
import shutil

import yaml

parser = argparse.ArgumentParser("FeTS preprocess example script")
parser.add_argument("--data_path", dest="input")
parser.add_argument("--parameters_file", dest="params")
parser.add_argument("--output_path", dest="output")
args = parser.parse_args()
with open(args.params) as f:
    params = yaml.safe_load(f)
shutil.copyfile(pathlib.Path(args.input, params["input_filename"]), pathlib.Path(args.output, params["output_filename"]))
print("Data has been processed!")
