"""Task hello: `internal_docker_mlbox_task_hello.py NAME_FILE GREETING_FILE`."""
import sys


def main():
    name_file, greeting_file = sys.argv[1:3]
    with open(name_file) as names:
        name = names.read().strip()
    with open(greeting_file, "w") as out:
        out.write(f"Hello, {name}!\n")


if __name__ == "__main__":
    main()
