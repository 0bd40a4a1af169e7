"""Task goodbye: `internal_docker_mlbox_task_goodbye.py NAME_FILE GREETING_FILE MESSAGE_FILE`:
the greeting said earlier, then a goodbye."""
import sys


def main():
    name_file, greeting_file, message_file = sys.argv[1:4]
    with open(name_file) as names:
        name = names.read().strip()
    with open(greeting_file) as greetings:
        greeting = greetings.read().strip()
    with open(message_file, "w") as out:
        out.write(f"{greeting} Goodbye, {name}!\n")


if __name__ == "__main__":
    main()
