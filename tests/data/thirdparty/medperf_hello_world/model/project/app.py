"""Every greeting combined with every name, one prediction per row."""
import argparse
import csv
import os

parser = argparse.ArgumentParser("MedPerf Model Hello World Example")
parser.add_argument("--names")
parser.add_argument("--uppercase", default="")
parser.add_argument("--greetings")
parser.add_argument("--out")
args = parser.parse_args()

with open(args.names) as f:
    rows = list(csv.reader(f))[1:]
with open(args.greetings) as f:
    greetings = [row[0] for row in csv.reader(f)]
lines = [f"{greeting}, {first} {last}" for greeting in greetings for first, last in rows]
if args.uppercase:
    lines = [line.upper() for line in lines]
with open(os.path.join(args.out, "predictions.csv"), "w", newline="") as f:
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(["id", "greeting"])
    writer.writerows(enumerate(lines))
