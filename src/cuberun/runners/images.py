"""Verifiable images for the docker runner (Docker and Podman): digest-pinned references and
the lock file.

- `image: name@sha256:D` runs exactly the image of manifest digest D: the local image must list
  `name@sha256:D` in its RepoDigests, else it is pulled by digest. `name:tag@sha256:D` must also
  agree with the tag: the image the engine has under `name:tag` (pulled when it has none) must be
  D, else the run is refused (ImageMoved, exit 2) before anything runs.
- `cuberun lock` writes `cuberun.lock` (JSON, versioned) next to the cube file: per image
  reference, its registry digest (or, for an image with none, built locally, its image id).
  Later runs verify the image against it (`--no-lock` skips that); a locked image that is missing
  locally is pulled by its digest and tagged, never by its tag.
- Podman talks plain HTTP to loopback registries (127.0.0.0/8, localhost, ::1) only with
  `--tls-verify=false`; Docker does that by default, so pulls from them get the flag on Podman.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from cuberun.errors import EXIT_USAGE, BackendError, CuberunError, UsageError
from cuberun.lazyre import LazyPattern
from cuberun.runners.base import Step
from cuberun.valueclass import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cuberun.runners.docker import DockerRunner

LOCK_NAME = "cuberun.lock"
LOCK_FORMAT = 1
LOCK_LIMIT = 1 << 20
DIGEST = LazyPattern(r"^sha256:[0-9a-f]{64}$")
RELOCK_HINT = "run `cuberun lock` again to accept the new image, or `cuberun run --no-lock` to skip the check"


class ImageMoved(CuberunError):
    """The image is not the one the cube pins or locks: nothing ran."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class ImageRef:
    """An image reference split into repository name, tag and digest (as written: no defaults added)."""

    text: str
    name: str
    tag: str | None = None
    digest: str | None = None

    @property
    def digest_ref(self) -> str:
        """`name@sha256:...` (the reference to pull or inspect by digest)."""
        return f"{self.name}@{self.digest}"

    @property
    def tag_ref(self) -> str:
        return f"{self.name}:{self.tag}" if self.tag else self.name

    @property
    def registry(self) -> str | None:
        """The registry host of the name, when it names one (a first component with '.' or ':', or localhost)."""
        first, sep, _ = self.name.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost"):
            return first
        return None


def parse_ref(text: str) -> ImageRef:
    """Split an image reference; ValueError (the problem, for a one-line error) on a bad digest."""
    ref = text.strip()
    name, at, digest = ref.partition("@")
    if at:
        if not DIGEST.match(digest):
            raise ValueError(f"'{ref}' has a bad digest '{digest}': expected sha256: and 64 lowercase hex digits")
    if not name:
        raise ValueError(f"'{ref}' has no image name")
    last = name.rsplit("/", 1)[-1]
    tag = None
    if ":" in last:
        name, tag = name.rsplit(":", 1)
        if not tag:
            raise ValueError(f"'{ref}' has an empty tag")
    return ImageRef(ref, name, tag, digest or None)


def canonical(name: str) -> str:
    """A repository name without the defaults engines add or drop (docker.io/library/, localhost/)."""
    for prefix in ("docker.io/", "index.docker.io/", "localhost/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    return name[len("library/"):] if name.startswith("library/") and name.count("/") == 1 else name


def digests_for(repo_digests: Sequence[str], name: str) -> list[str]:
    """The manifest digests RepoDigests lists for repository `name`."""
    want = canonical(name)
    out = []
    for entry in repo_digests:
        repo, at, digest = str(entry).partition("@")
        if at and canonical(repo) == want:
            out.append(digest)
    return out


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    bare = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    bare = bare.strip("[]")
    return bare == "localhost" or bare == "::1" or bare.startswith("127.")


def pull_argv(executable: Sequence[str], podman: bool, ref: str) -> list[str]:
    """`docker pull REF`; on Podman with `--tls-verify=false` for a loopback registry (Docker's own default)."""
    argv = [*executable, "pull"]
    try:
        host = parse_ref(ref).registry
    except ValueError:
        host = None
    if podman and is_loopback(host):
        argv.append("--tls-verify=false")
    return [*argv, ref]


# -- the lock file --------------------------------------------------------------------------
@dataclass(frozen=True)
class LockEntry:
    digest: str | None  # the registry (manifest) digest, when the image has one
    id: str | None  # the image id (what is checked when there is no registry digest)

    @property
    def value(self) -> str:
        return self.digest or self.id or "?"


def lock_path(cube_file: Path) -> Path:
    return Path(cube_file).parent / LOCK_NAME


def read_lock(path: Path) -> dict[str, LockEntry] | None:
    """The entries of a lock file (None when there is none); a bad file is a one-line error."""
    from cuberun.safeio import FileProblem, read_regular

    if not path.exists() and not path.is_symlink():
        return None
    try:
        data = json.loads(read_regular(path, LOCK_LIMIT, what="lock file"))
    except FileProblem:
        raise
    except ValueError as exc:
        raise UsageError(f"{path}: not a cuberun lock file ({exc})", "run `cuberun lock` to write it again") from None
    if not isinstance(data, dict) or data.get("cuberun_lock") != LOCK_FORMAT or not isinstance(data.get("images"), dict):
        raise UsageError(f"{path}: not a cuberun lock file of format {LOCK_FORMAT}", "run `cuberun lock` to write it again")
    out = {}
    for ref, entry in data["images"].items():
        entry = entry if isinstance(entry, dict) else {}
        digest, image_id = entry.get("digest"), entry.get("id")
        if not (isinstance(digest, str) and DIGEST.match(digest)) and not (isinstance(image_id, str) and DIGEST.match(image_id)):
            raise UsageError(f"{path}: images.{ref}: needs a digest or an id (sha256:...)", "run `cuberun lock` to write it again")
        out[str(ref)] = LockEntry(digest if isinstance(digest, str) and DIGEST.match(digest) else None,
                                  image_id if isinstance(image_id, str) and DIGEST.match(image_id) else None)
    return out


def write_lock(path: Path, entries: dict[str, LockEntry]) -> Path:
    """Write the lock file atomically (never over a non-regular file), entries sorted: stable diffs."""
    from cuberun.safeio import write_file

    images = {ref: {k: v for k, v in (("digest", e.digest), ("id", e.id)) if v} for ref, e in sorted(entries.items())}
    text = json.dumps({"cuberun_lock": LOCK_FORMAT, "images": images}, indent=2) + "\n"
    return write_file(path, text, what="lock file", hint=f"remove it, or move the cube: {LOCK_NAME} sits next to the cube file")


# -- talking to the engine -------------------------------------------------------------------
@dataclass(frozen=True)
class Found:
    id: str
    repo_digests: tuple[str, ...]


def inspect(runner: DockerRunner, ref: str) -> Found | None:
    """The image id and RepoDigests of `ref` as the engine has it; None when it has none."""
    res = runner._capture("image", "inspect", "--format", "{{.Id}} {{json .RepoDigests}}", ref)
    if res.returncode != 0:
        problem = runner._daemon_problem(res.stderr)
        if problem:
            from cuberun.errors import RunnerUnavailable

            raise RunnerUnavailable(problem)
        return None
    first = (res.stdout.strip().splitlines() or [""])[0]
    image_id, _, raw = first.partition(" ")
    try:
        digests = json.loads(raw) if raw else []
    except ValueError:
        digests = []
    image_id = image_id if image_id.startswith("sha256:") else f"sha256:{image_id}"
    return Found(image_id, tuple(str(d) for d in digests) if isinstance(digests, list) else ())


def _run_quiet(runner: DockerRunner, argv: list[str], what: str) -> None:
    from cuberun.console import say
    from cuberun.runners.container import first_line, last_error_line

    say(f"{what}: {' '.join(argv)}")
    from cuberun.process import capture

    res = capture(argv, timeout=3600.0)
    if res.returncode != 0:
        problem = runner._daemon_problem(res.stderr)
        line = last_error_line(res.stderr, lambda s: s.lower().startswith(("error", "docker:"))) or first_line(res.stderr)
        raise BackendError(problem or f"'{' '.join(argv)}' failed (exit {res.returncode}): {line}",
                           "check that the registry is reachable and the reference exists")


def _pull(runner: DockerRunner, ref: str) -> Found | None:
    _run_quiet(runner, pull_argv(runner.executable, runner.is_podman, ref), f"pulling {ref}")
    return inspect(runner, ref)


# -- what the runner calls -------------------------------------------------------------------
def checked_ref(runner: DockerRunner) -> ImageRef:
    """The runner's image reference parsed; a bad digest is a one-line error at docker.image."""
    from cuberun.errors import Issue, SpecError

    try:
        return parse_ref(runner.image)
    except ValueError as exc:
        issue = runner.cube.doc.issue(("docker", "image"), str(exc), "write name@sha256:<64 hex digits>, as `docker push` or `docker images --digests` prints it", value=True)
        raise SpecError([Issue(issue.message, issue.file, issue.line, issue.column, "docker.image", issue.hint)]) from None


def lock_entry(runner: DockerRunner) -> tuple[Path, LockEntry] | None:
    """The lock file's entry for the runner's image (None without a lock file or with --no-lock)."""
    if getattr(runner.options, "ignore_lock", False):
        return None
    path = lock_path(runner.cube.file)
    entries = read_lock(path)
    if entries is None:
        return None
    entry = entries.get(runner.image)
    if entry is None:
        raise ImageMoved(f"{path}: image {runner.image} is not locked (the lock has: {', '.join(sorted(entries)) or 'nothing'})", RELOCK_HINT)
    return path, entry


def locked_value(runner: DockerRunner) -> str | None:
    """The locked digest (or id) of the runner's image, for the up-to-date identity; None when unlocked."""
    try:
        locked = lock_entry(runner)
    except CuberunError:
        return None
    return locked[1].value if locked else None


def lock_steps(runner: DockerRunner) -> list[Step] | None:
    """For a locked image with a registry digest: pull it by that digest and give it its name
    (what configure runs when the image is missing; what --dry-run shows). None otherwise."""
    ref = checked_ref(runner)
    locked = lock_entry(runner)
    if locked is None or locked[1].digest is None or ref.digest:
        return None
    by_digest = f"{ref.name}@{locked[1].digest}"
    return [Step(tuple(pull_argv(runner.executable, runner.is_podman, by_digest)), "pull"),
            Step((*runner.executable, "tag", by_digest, runner.image), "tag")]


def prepare(runner: DockerRunner) -> bool:
    """Before configure's own presence check: a locked image that is missing is pulled by its
    locked digest and tagged. True when it did that."""
    steps = lock_steps(runner)
    if steps is None or inspect(runner, runner.image) is not None:
        return False
    for step in steps:
        _run_quiet(runner, list(step.argv), f"{'pulling' if step.purpose == 'pull' else 'tagging'} {runner.image} (locked)")
    return True


def verify(runner: DockerRunner) -> dict[str, Any]:
    """After configure: the image is the pinned digest / agrees with its tag / matches the lock.
    Returns what the run record and the identity say about it."""
    ref = checked_ref(runner)
    facts: dict[str, Any] = {}
    if ref.digest:
        found = inspect(runner, ref.digest_ref)
        if found is None or ref.digest not in digests_for(found.repo_digests, ref.name):  # podman finds an untagged copy by digest
            found = _pull(runner, ref.digest_ref)
            if found is None or ref.digest not in digests_for(found.repo_digests, ref.name):
                raise BackendError(f"image {ref.digest_ref} is not listed under that digest after the pull", "check the digest and the registry")
        if ref.tag:
            tagged = inspect(runner, ref.tag_ref) or _pull(runner, ref.tag_ref)
            actual = digests_for(tagged.repo_digests, ref.name) if tagged else []
            if ref.digest not in actual:
                raise ImageMoved(f"image {ref.text}: tag {ref.tag_ref} is {', '.join(actual) or 'an image with no registry digest'}, "
                                 f"not the pinned {ref.digest}; nothing ran",
                                 f"the tag was moved to another image: pin the digest alone ({ref.digest_ref}), or update the digest")
        facts["pinned"] = ref.digest
    locked = lock_entry(runner)
    if locked is not None:
        path, entry = locked
        found = inspect(runner, runner.image)
        if found is None:
            raise ImageMoved(f"image {runner.image} is not present; {path} locks {entry.value}", RELOCK_HINT)
        if entry.digest:
            actual = digests_for(found.repo_digests, ref.name)
            if entry.digest not in actual:
                raise ImageMoved(f"image {runner.image} moved: {path} locks {entry.digest}, the engine has "
                                 f"{', '.join(actual) or 'an image with no registry digest (' + found.id + ')'}; nothing ran", RELOCK_HINT)
        elif entry.id != found.id:
            raise ImageMoved(f"image {runner.image} moved: {path} locks image id {entry.id}, the engine has {found.id}; nothing ran", RELOCK_HINT)
        facts["locked"] = {"file": str(path), **({"digest": entry.digest} if entry.digest else {"id": entry.id})}
    return facts


def resolve(runner: DockerRunner) -> LockEntry:
    """The lock entry of the runner's image as the engine has it now (after configure)."""
    ref = checked_ref(runner)
    found = inspect(runner, runner.image)
    if found is None:
        raise BackendError(f"image {runner.image} is not present after configure", f"pull or build it: {' '.join(runner.executable)} pull {runner.image}")
    digests = [ref.digest] if ref.digest else digests_for(found.repo_digests, ref.name)
    return LockEntry(digests[0], None) if digests else LockEntry(None, found.id)


def pull_now(runner: DockerRunner) -> None:
    """`cuberun lock --pull`: take the registry's current image for the reference (not for a build)."""
    _pull(runner, runner.image)
    runner.image_state(refresh=True)


def lock_image(runner: DockerRunner, pull: bool) -> tuple[str, dict[str, dict[str, str]]]:
    """`cuberun lock` for the docker runner: the image made present (pulled first with `pull`),
    its entry resolved and written into the lock file (the other entries kept)."""
    if pull:
        pull_now(runner)
    runner.configure()
    entry = resolve(runner)
    path = lock_path(runner.cube.file)
    entries = read_lock(path) or {}
    entries[runner.image] = entry
    write_lock(path, entries)
    return str(path), {ref: ({"digest": e.digest} if e.digest else {"id": e.id or ""}) for ref, e in sorted(entries.items())}


def registry_digest(ref_text: str, repo_digests: Sequence[str]) -> str | None:
    """The registry digest of what ran, for the run record: the one of the reference's repository."""
    try:
        ref = parse_ref(ref_text)
    except ValueError:
        return None
    if ref.digest:
        return ref.digest if ref.digest in digests_for(repo_digests, ref.name) else None
    found = digests_for(repo_digests, ref.name)
    return found[0] if found else None
