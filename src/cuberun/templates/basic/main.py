"""{{name}}: the cube's program. The runner calls it as `<program> {{task}} --parameters_file=... --output_dir=...`."""

import argparse
import json
import os
import sys


def {{task}}(parameters_file: str, output_dir: str) -> None:
    with open(parameters_file, encoding="utf-8") as fh:
        text = fh.read()
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "result.json"), "w", encoding="utf-8") as fh:
        json.dump({"parameters": text, "status": "ok"}, fh)
    print(f"wrote {output_dir}/result.json")


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(prog="{{module}}")
    parser.add_argument("task", choices=["{{task}}"])
    parser.add_argument("--parameters_file", required=True)
    parser.add_argument("--output_dir", required=True)
    args = parser.parse_args(argv)
    {{task}}(args.parameters_file, args.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
