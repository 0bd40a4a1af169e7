"""The box's entry point: `internal_docker_mlbox_main.py TASK --io_name=PATH ...`.

Each task is a script of its own beside this one (internal_docker_mlbox_task_<TASK>.py), given
the task's paths as positional arguments in the order the task declares them.
"""
import os
import re
import subprocess
import sys

# task -> its inputs and outputs, in the order its script takes them
TASKS = {
    "hello": ("name", "greeting"),
    "goodbye": ("name", "greeting", "message"),
}


def parse_command_line(argv):
    if not argv:
        raise SystemExit(f"usage: {os.path.basename(__file__)} TASK --name=PATH ...")
    task, iomap = argv[0], {}
    for arg in argv[1:]:
        match = re.match(r"--([^=]+)=(.+)", arg)
        if not match:
            raise SystemExit(f"invalid argument: {arg} (expected --name=path)")
        iomap[match.group(1)] = match.group(2)
    return task, iomap


def main():
    print("MLBox starting.")
    task, iomap = parse_command_line(sys.argv[1:])
    if task not in TASKS:
        raise SystemExit(f"no known MLBox task: {task} (known: {', '.join(TASKS)})")
    missing = [name for name in TASKS[task] if name not in iomap]
    if missing:
        raise SystemExit(f"task {task}: missing --{'=PATH, --'.join(missing)}=PATH")
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"internal_docker_mlbox_task_{task}.py")
    done = subprocess.run([sys.executable, script, *(iomap[name] for name in TASKS[task])], check=False)
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
