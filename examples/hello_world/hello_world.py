"""hello_world cube: append a greeting or a goodbye to a chat file.

Usage: hello_world.py {hello,bye} --name=FILE --chat=FILE
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

MESSAGES: dict[str, str] = {
    "hello": "Hi, {name}! Nice to meet you.",
    "bye": "Bye, {name}! Talk to you soon.",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hello_world.py", description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=sorted(MESSAGES), help="task to run")
    parser.add_argument("--name", required=True, type=Path, help="file holding the person's name")
    parser.add_argument("--chat", required=True, type=Path, help="chat file to append to")
    return parser.parse_args(argv)


def run(task: str, name_file: Path, chat_file: Path) -> str:
    name = name_file.read_text(encoding="utf-8").strip()
    if not name:
        raise ValueError(f"{name_file} is empty: expected a name")
    line = MESSAGES[task].format(name=name)
    chat_file.parent.mkdir(parents=True, exist_ok=True)
    with chat_file.open("a", encoding="utf-8") as chat:
        chat.write(line + "\n")
    return line


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        line = run(args.task, args.name, args.chat)
    except (OSError, ValueError) as exc:
        print(f"hello_world: error: {exc}", file=sys.stderr, flush=True)
        return 1
    print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
