"""The ssh runner: a task on another machine through the system's OpenSSH and rsync.

The user's ssh setup (``~/.ssh/config``, agents, jump hosts, keys, known_hosts) is used as is;
host keys are checked unless the user explicitly says otherwise. One connection is multiplexed
(ControlMaster) for all the ssh and rsync calls of a run.

Remote layout (``<root>`` = ``remote_root``, relative paths are under the remote $HOME)::

    <root>/venv/                          cuberun installed by `configure` (cuberun: venv)
    <root>/cuberun-src/                   the source tree or wheel it was installed from
    <root>/cubes/<name>-<hash>/           the cube sources (hash of the local host and cube path)
        workspace/...                     the task's inputs and outputs, mirroring the local workspace
        .cuberun/external/<hash>/<name>   inputs and outputs that live outside the workspace
        .cuberun/workspaces/<name>-<hash> the remote workspace when the local one is outside the cube
        .cuberun/pids/                    the pid of each running remote cuberun (for Ctrl-C)

A run: (1) one rsync sends the cube sources and the task's inputs (and its existing outputs, so
the remote state equals the local one); (2) ``ssh HOST <remote cuberun> run ...`` with every
parameter mapped to its remote path, every -P value and every run option, streamed live;
(3) one rsync brings the outputs and the remote run record back. The remote command is an argv
list turned into one shell-quoted string (the remote login shell is the only shell involved).
This side decides whether a task runs and runs its prerequisites itself, so the remote cuberun
gets --force --no-deps. Ctrl-C also interrupts the remote cuberun through its recorded pid.
The remote command line comes from runners/nested.py (the one option table slurm uses too), and
the remote cuberun tells its run id and its own errors through the versioned handshake lines
(`--handshake`), never through its human-readable output.

Limits: the remote login shell must understand POSIX single quotes (sh, bash, zsh, ksh); the
remote cuberun expands $VARS in parameter values once more, like any cuberun invocation.

Modules: config.py (the platform entry: host, auth, remote layout, the remote cuberun), commands.py
(the ssh/rsync command lines and the remote layout of a task; pure), connection.py (running them:
the shared connection, transfers, error mapping, what this machine remembers of the remote),
install.py (cuberun in a remote venv), runner.py (the Runner contract), sync.py (rsync filter
rules, transfer statistics and progress, ssh/rsync error messages; pure).
"""

from cuberun.runners.ssh.runner import SSHRunner

__all__ = ["SSHRunner"]
