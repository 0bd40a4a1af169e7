"""Fetch the raw Boston housing data set named in the parameters file into data_dir."""
import argparse
import os

import requests
import yaml


def main():
    parser = argparse.ArgumentParser(description="Download dataset")
    parser.add_argument("--data_dir", required=True, help="Dataset download path")
    parser.add_argument("--parameters_file", required=True, help="File containing extra parameters")
    args = parser.parse_args()
    with open(args.parameters_file) as stream:
        url = yaml.safe_load(stream)["dataset_url"]
    response = requests.get(url, timeout=60)
    response.raise_for_status()
    target = os.path.join(args.data_dir, "raw_dataset.txt")
    with open(target, "wb") as out:
        out.write(response.content)
    print(f"raw data saved to {target}")


if __name__ == "__main__":
    main()
