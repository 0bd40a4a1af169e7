"""Count the valid and invalid subject folders."""
import argparse
import os

import yaml
from sanity_check import subject_is_valid

if __name__ == "__main__":
    parser = argparse.ArgumentParser("MedPerf Statistics Example")
    parser.add_argument("--data_path", dest="data")
    parser.add_argument("--out_file", dest="out_file")
    args = parser.parse_args()
    valid = invalid = 0
    for entry in os.listdir(args.data):
        subject = os.path.join(args.data, entry)
        if os.path.isdir(subject):
            if subject_is_valid(subject):
                valid += 1
            else:
                invalid += 1
    with open(args.out_file, "w") as f:
        yaml.dump({"Valid_Subjects": valid, "Invalid_Subjects": invalid}, f)
    print("Finished")
