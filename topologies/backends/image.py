"""The node image: what every container of the containernet backend runs.

Two ways to build the same image, one command (`bcfl image build [--offline]`):

* online: `docker build -f topologies/backends/dockerfiles/Dockerfile` from a slim Python
  base image, with torch from the index that ``BCFL_TORCH_INDEX_URL`` names (PyTorch's CPU
  index: never spelled here), for machines that reach Docker Hub. When the build fails
  because no registry answers (name resolution, connection refused or timed out), it says
  so in one line and builds offline instead (as root);
* offline (`--offline`): no registry of images needed. A Debian root filesystem is made with
  debootstrap (from the Debian mirror of this machine's apt sources, or ``--mirror`` /
  ``BCFL_DEBIAN_MIRROR``), the project and its dependencies are turned into
  wheels on this machine (`pip wheel`, so pip's own configuration, local wheel directories
  and CPU torch included, applies), installed into a venv inside the root filesystem by a
  chroot'ed pip that never touches the network, and `docker import`ed as the base image
  `bcfl-node-base:<deps digest>`. The project itself is then layered on top by a small
  `docker build` (dockerfiles/Dockerfile.layer), so a code change rebuilds in seconds.

Both give `/opt/bcfl/venv` with torch, the package and its dependencies on PATH, bash,
iproute2, net-tools, iputils-ping, tcpdump and ethtool, and `sleep infinity` as the command.
The tag is `bcfl-node:<version>-<source digest>`: the containernet backend asks for the
image of the code it runs, so a stale image is never used by mistake.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from topologies.backends.aptsources import APT_ROOT, MirrorError, resolve_mirror

log = logging.getLogger(__name__)

PACKAGES = ("topologies", "node", "orchestrator")
REPO = "bcfl-node"
VENV = "/opt/bcfl/venv"
PATH_ENV = f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEBIAN_SUITE = "bookworm"
DEBIAN_PACKAGES = (
    "python3",
    "python3-venv",
    "bash",
    "iproute2",
    "net-tools",
    "iputils-ping",
    "tcpdump",
    "ethtool",
    "procps",
    "ca-certificates",
)
EXTRAS = "mnist5k"
DEFAULT_CACHE = Path(os.environ.get("BCFL_IMAGE_CACHE", "/var/tmp/bcfl-image"))
DOCKERFILES = Path(__file__).resolve().parent / "dockerfiles"
TORCH_INDEX_ENV = "BCFL_TORCH_INDEX_URL"
MIRROR_ENV = "BCFL_DEBIAN_MIRROR"
# What a failed pull or build says when no registry (of images or of packages) answers.
NO_REGISTRY_SIGNS = (
    "no such host",
    "temporary failure in name resolution",
    "name or service not known",
    "server misbehaving",
    "network is unreachable",
    "connection refused",
    "i/o timeout",
    "tls handshake timeout",
    "failed to establish a new connection",
    "connection timed out",
    "could not resolve host",
)


class ImageError(RuntimeError):
    """The image cannot be built or found; the message says why and what to do."""


def source_root() -> Path:
    """The repository the running package comes from (where pyproject.toml is)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise ImageError(
            f"{root} is not a source checkout (no pyproject.toml): build the image from the "
            "repository (pip install -e .)"
        )
    return root


def _package_files(root: Path) -> list[Path]:
    files = [root / "pyproject.toml"]
    for pkg in PACKAGES:
        files += sorted(p for p in (root / pkg).rglob("*.py") if "__pycache__" not in p.parts)
    return files


def source_digest(root: Path | None = None) -> str:
    """A digest of the package's Python files (and pyproject.toml) as they are now."""
    root = root or Path(__file__).resolve().parents[2]
    h = hashlib.sha256()
    for path in _package_files(root):
        if path.is_file():
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def _version() -> str:
    try:
        return metadata.version("bcfl-testbed")
    except metadata.PackageNotFoundError:
        return "0"


def default_tag() -> str:
    """The node image of the code that is running now."""
    return f"{REPO}:{_version()}-{source_digest()}"


def _torch_requirement() -> str:
    import torch

    return f"torch=={torch.__version__.split('+')[0]}"


def _base_digest() -> str:
    """What the offline base depends on: suite, Debian packages, dependencies, torch."""
    root = source_root()
    text = (root / "pyproject.toml").read_text()
    deps = text[text.index("dependencies") : text.index("[project.scripts]")]
    h = hashlib.sha256(
        "\n".join([DEBIAN_SUITE, *DEBIAN_PACKAGES, deps, _torch_requirement(), EXTRAS]).encode()
    )
    return h.hexdigest()[:12]


def _run(argv: list[str], what: str, **kw: Any) -> None:
    t0 = time.monotonic()
    print(f"bcfl image: {what} …", file=sys.stderr, flush=True)
    proc = subprocess.run(argv, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        raise ImageError(f"{what} failed (exit {proc.returncode}):\n" + "\n".join(tail))
    log.info("%s took %.1f s", what, time.monotonic() - t0)


def _mirror(explicit: str = "", apt_root: Path = APT_ROOT) -> str:
    """--mirror, else BCFL_DEBIAN_MIRROR, else this machine's own apt sources."""
    try:
        return resolve_mirror(
            explicit or os.environ.get(MIRROR_ENV, ""),
            root=apt_root,
            option=f"--mirror or {MIRROR_ENV}",
        )
    except MirrorError as exc:
        raise ImageError(str(exc)) from None


def registry_unreachable(message: str) -> bool:
    """Whether a failed online build's message means that no registry answered (then the
    offline build is the way), rather than a broken Dockerfile or a full disk."""
    low = message.lower()
    return any(sign in low for sign in NO_REGISTRY_SIGNS)


def build_wheels(dest: Path) -> None:
    """Wheels of the project, its dependencies and torch (pip resolves them here)."""
    root = source_root()
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(dest),
         f"{root}[{EXTRAS}]", _torch_requirement()],
        "pip wheel (project, dependencies, torch)",
    )  # fmt: skip


def build_rootfs(rootfs: Path, wheels: Path, mirror: str) -> None:
    """debootstrap a minimal Debian and install the wheels into a venv by a chroot'ed pip."""
    if shutil.which("debootstrap") is None:
        raise ImageError("--offline needs debootstrap: apt-get install debootstrap")
    _run(
        ["debootstrap", "--variant=minbase", "--include=" + ",".join(DEBIAN_PACKAGES),
         DEBIAN_SUITE, str(rootfs), mirror],
        f"debootstrap {DEBIAN_SUITE} from {mirror}",
    )  # fmt: skip
    inside = rootfs / "tmp" / "wheels"
    shutil.copytree(wheels, inside)
    env = {"PATH": PATH_ENV, "HOME": "/root", "PIP_CONFIG_FILE": "/dev/null"}
    _run(["chroot", str(rootfs), "python3", "-m", "venv", VENV], "python3 -m venv", env=env)
    _run(
        ["chroot", str(rootfs), f"{VENV}/bin/pip", "install", "-q", "--no-index",
         "--no-cache-dir", "--find-links", "/tmp/wheels", _torch_requirement(),
         f"bcfl-testbed[{EXTRAS}]"],
        "pip install into the image (no network)",
        env=env,
    )  # fmt: skip
    shutil.rmtree(inside)
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for p in (rootfs / junk).glob("*"):
            if p.is_file():
                p.unlink()


def _import_base(client: Any, rootfs: Path, tag: str) -> None:
    print(f"bcfl image: docker import {tag} …", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="bcfl-image-") as tmp:
        tar_path = Path(tmp) / "rootfs.tar"
        _run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(tar_path), "."], "tar")
        changes = [
            f"ENV PATH={PATH_ENV}",
            'CMD ["sleep", "infinity"]',
            "LABEL bcfl.image=base",
        ]
        repo, _, version = tag.partition(":")
        # a file, not a stream: the engine's chunked-upload parser rejects docker-py's stream
        client.api.import_image(src=str(tar_path), repository=repo, tag=version, changes=changes)
    if not client.images.list(name=tag):
        raise ImageError(f"docker import did not create {tag}")


def build_offline(client: Any, tag: str, cache: Path = DEFAULT_CACHE, mirror: str = "") -> str:
    """The offline path: debootstrap base (cached by digest) + a layer with the project."""
    base = f"{REPO}-base:{_base_digest()}"
    if client.images.list(name=base):
        print(f"bcfl image: base {base} exists", file=sys.stderr)
    else:
        cache.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="build-", dir=cache))
        try:
            build_wheels(work / "wheels")
            build_rootfs(work / "rootfs", work / "wheels", _mirror(mirror))
            _import_base(client, work / "rootfs", base)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    _build_layer(client, base, tag)
    return tag


def _build_layer(client: Any, base: str, tag: str) -> None:
    """dockerfiles/Dockerfile.layer: the project's wheel on top of the base (no network)."""
    root = source_root()
    with tempfile.TemporaryDirectory(prefix="bcfl-layer-") as tmp:
        ctx = Path(tmp)
        _run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir",
             str(ctx / "wheel"), str(root)],
            "pip wheel (project)",
        )  # fmt: skip
        shutil.copy(DOCKERFILES / "Dockerfile.layer", ctx / "Dockerfile")
        _docker_build(client, ctx, "Dockerfile", tag, {"BASE": base})


def build_online(client: Any, tag: str) -> str:
    """dockerfiles/Dockerfile from python:3.11-slim (needs Docker Hub and a package index)."""
    root = source_root()
    index = os.environ.get(TORCH_INDEX_ENV, "")
    if not index:
        print(
            f"bcfl image: {TORCH_INDEX_ENV} is not set: pip in the image takes torch from its "
            "default index (the CUDA build, ~2.8 GB); set it to the CPU index URL from "
            "PyTorch's install page",
            file=sys.stderr,
        )
    dockerfile = str((DOCKERFILES / "Dockerfile").relative_to(root))
    _docker_build(client, root, dockerfile, tag, {"TORCH_INDEX_URL": index})
    return tag


def _docker_build(
    client: Any, context: Path, dockerfile: str, tag: str, buildargs: dict[str, str]
) -> None:
    print(f"bcfl image: docker build {tag} …", file=sys.stderr, flush=True)
    from docker.errors import APIError, BuildError

    try:
        client.images.build(
            path=str(context),
            dockerfile=dockerfile,
            tag=tag,
            buildargs=buildargs,
            labels={"bcfl.source": source_digest(), "bcfl.version": _version()},
            rm=True,
            forcerm=True,
        )
    except BuildError as exc:
        lines = [str(c.get("stream", c.get("error", ""))).rstrip() for c in exc.build_log]
        raise ImageError(
            "docker build failed: " + str(exc) + "\n" + "\n".join(lines[-15:])
        ) from None
    except APIError as exc:  # e.g. the engine could not pull the base image
        raise ImageError(f"docker build failed: {exc}") from None


def build(offline: bool, tag: str | None = None, mirror: str = "") -> str:
    """Build the node image; its tag."""
    from topologies.backends.docker_engine import client as docker_client

    c = docker_client()
    tag = tag or default_tag()
    t0 = time.monotonic()
    if not offline:
        try:
            build_online(c, tag)
        except ImageError as exc:
            if not registry_unreachable(str(exc)):
                raise
            first = str(exc).splitlines()[0][:160]
            print(
                f"bcfl image: no registry reachable ({first}): building offline instead",
                file=sys.stderr,
            )
            offline = True
    if offline:
        if os.geteuid() != 0:
            raise ImageError("--offline needs root (debootstrap and chroot)")
        build_offline(c, tag, mirror=mirror)
    print(f"bcfl image: built {tag} in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return tag


def require(client: Any, tag: str) -> None:
    """Raise ImageError (saying how to build it) if the image is missing."""
    if not client.images.list(name=tag):
        raise ImageError(
            f"the node image {tag} is not in the Docker engine: run `bcfl image build "
            "--offline` (or `bcfl image build` where Docker Hub is reachable), or set "
            "containers.image in the scenario"
        )
