"""Turn the raw file (22 header lines, each record split over two lines) into one CSV."""
import argparse

import pandas as pd

COLUMNS = ["CRIM", "ZN", "INDUS", "CHAS", "NOX", "RM", "AGE", "DIS", "RAD", "TAX", "PTRATIO", "B", "LSTAT", "PRICE"]


def main():
    parser = argparse.ArgumentParser(description="Preprocess dataset")
    parser.add_argument("--input_file", required=True)
    parser.add_argument("--output_file", required=True)
    args = parser.parse_args()
    raw = pd.read_csv(args.input_file, skiprows=22, header=None, sep=r"\s+")
    first = raw[raw.index % 2 == 0].reset_index(drop=True)
    second = raw[raw.index % 2 == 1].iloc[:, :3].reset_index(drop=True)
    second.columns = [11, 12, 13]
    table = first.join(second)
    table.columns = COLUMNS
    table.to_csv(args.output_file, index=False)
    print(f"{len(table)} rows written to {args.output_file}")


if __name__ == "__main__":
    main()
