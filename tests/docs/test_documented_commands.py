"""The documentation's commands are tests: each shell block of README.md, docs/*.md and
examples/*/README.md runs, as a reader would type it, in a fresh copy of the repository with a
fresh virtualenv (README command 1 makes it), offline unless the block is marked `network`.
See tests/docs/doctest_blocks.py for the convention."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.backends import skip_or_fail
from tests.docs.doctest_blocks import REPO, Block, blocks, commands, copy_checkout, documents, offline_prefix, script, user_environment

DOCS = [str(p.relative_to(REPO)) for p in documents()]
BLOCK_TIMEOUT = 900  # s: command 1 installs cuberun, and builds the digits env when the cache is empty


def test_every_block_follows_the_convention() -> None:
    problems = [f"{b.where()}: {b.problem}" for d in documents() for b in blocks(d) if b.problem]
    assert problems == []
    readme = blocks(REPO / "README.md")
    assert readme[0].mode == "network" and "python3 -m venv .venv && . .venv/bin/activate" in readme[0].text
    assert any(b.mode == "offline" for b in readme)


def test_convention_is_enforced(tmp_path: Path) -> None:
    doc = tmp_path / "README.md"
    doc.write_text("```\ncuberun run\n```\n\n<!-- doctest: skip -->\n```bash\nx\n```\n\n<!-- doctest: network -->\n```yaml\na: 1\n```\n\n"
                   "```bash\n# comment\ncuberun a \\\n  --b && c\n\necho done\n```\n")
    found = blocks(doc, tmp_path)
    assert [b.problem.split(" (")[0].split(":")[0] for b in found] == [
        "a fenced block without a language", "unknown doctest marker 'skip'", "a doctest marker on a block that is not a shell block", ""]
    last = found[-1]
    assert last.mode == "offline" and [line for line, _ in commands(last)] == [17, 20]
    # an `a && b` line whose first part fails stops the block, and says where
    failing = Block("x.md", 1, "bash", "false && echo no\necho after\n", "offline")
    got = subprocess.run(["bash", "-c", script(failing)], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert (got.returncode, got.stdout, got.stderr) == (1, "", "doctest: x.md:2 exited with 1\n")


class DocSession:
    """One fresh checkout for the session; each document's blocks run once, README.md first."""

    def __init__(self, root: Path, cache: Path) -> None:
        self.checkout = copy_checkout(root / "cuberun")
        (root / "home").mkdir()
        self.env = user_environment(root / "home", cache)
        self.offline = offline_prefix()
        self.results: dict[str, list[str]] = {}
        self.timings: dict[str, float] = {}

    def run_block(self, block: Block) -> str | None:
        prefix: list[str] = []
        if block.mode == "offline":
            if self.offline is None:
                skip_or_fail("no network namespace can be made here (unshare --net, or a user namespace), so offline blocks cannot run offline")
            prefix = self.offline or []
        start = time.monotonic()
        try:
            got = subprocess.run([*prefix, "bash", "-c", script(block)], cwd=self.checkout, env=self.env, capture_output=True, text=True,
                                 timeout=BLOCK_TIMEOUT, stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            return f"{block.where()}: did not finish within {BLOCK_TIMEOUT} s"
        finally:
            self.timings[block.where()] = time.monotonic() - start
        if got.returncode != 0:
            tail = "\n".join((got.stdout + got.stderr).strip().splitlines()[-25:])
            return f"{block.where()} ({block.mode}) exited with {got.returncode}:\n{tail}"
        return None

    def run(self, doc: str) -> list[str]:
        if doc != "README.md" and "README.md" not in self.results:
            self.run("README.md")
        if doc != "README.md" and self.results["README.md"]:
            return [f"README.md failed first (its command 1 makes the virtualenv {doc} needs)"]
        if doc not in self.results:
            failures = []
            for block in blocks(REPO / doc):
                if block.mode in ("offline", "network"):
                    failure = self.run_block(block)
                    if failure:
                        failures.append(failure)
                        break  # later blocks build on this one
            self.results[doc] = failures
        return self.results[doc]


@pytest.fixture(scope="session")
def doc_session(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> DocSession:
    return DocSession(tmp_path_factory.mktemp("docs"), cache_dir)


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOCS)
def test_documented_commands_run(doc_session: DocSession, doc: str) -> None:
    failures = doc_session.run(doc)
    print("seconds per block:", {k: round(v, 1) for k, v in doc_session.timings.items() if k.startswith(doc + ":")})
    assert failures == [], "\n\n".join(failures)
    if doc == "README.md":
        checkout = doc_session.checkout
        assert (checkout / ".venv" / "bin" / "cuberun").is_file()
        report = json.loads((checkout / "examples" / "digits" / "workspace" / "report.json").read_text())
        assert report["accuracy"] > 0.9
        assert (checkout / "my_cube" / "workspace" / "output" / "result.json").is_file()
        chats = checkout / "examples" / "hello_world" / "workspace" / "chats"
        assert (chats / "chat_with_bob.txt").read_text().startswith("Hi, Bob!")
