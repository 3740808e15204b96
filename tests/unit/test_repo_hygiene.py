"""The repository itself: no top-level folder or module shadows a dependency (pytest runs
with the repo on sys.path), and no package registry's or mirror's host name is written in
any tracked file (mirrors come from the machine's apt sources and pip configuration)."""

from __future__ import annotations

import re
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Import names of distributions that may not be installed here (where they are installed,
# importlib.metadata's top_level.txt / file list is read as well).
KNOWN_IMPORTS = {
    "pyzmq": {"zmq"},
    "pynacl": {"nacl"},
    "pyyaml": {"yaml"},
    "scikit-learn": {"sklearn"},
    "docker": {"docker"},
    "mlxtend": {"mlxtend"},
    "hypothesis": {"hypothesis"},
    "pytest": {"pytest", "_pytest"},
    "ruff": {"ruff"},
    "mypy": {"mypy"},
    "types-pyyaml": {"yaml-stubs"},
    "msgpack": {"msgpack"},
    "pydantic": {"pydantic"},
    "matplotlib": {"matplotlib", "mpl_toolkits"},
    "tqdm": {"tqdm"},
    "torch": {"torch"},
    "numpy": {"numpy"},
}
# Names a registry/mirror host is known by, as labels (so that this file does not spell
# them either); the test is that none appears in a tracked file.
REGISTRY_HOSTS = tuple(
    ".".join(labels)
    for labels in (
        ("deb", "debian", "org"),
        ("ftp", "debian", "org"),
        ("security", "debian", "org"),
        ("snapshot", "debian", "org"),
        ("archive", "ubuntu", "com"),
        ("download", "pytorch", "org"),
        ("pypi", "org"),
        ("pypi", "python", "org"),
        ("files", "pythonhosted", "org"),
        ("registry-1", "docker", "io"),
        ("index", "docker", "io"),
    )
)


def _requirement_name(req: str) -> str:
    return re.split(r"[\s<>=!~;\[]", req.strip(), maxsplit=1)[0].lower()


def declared_distributions() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    return {_requirement_name(r) for r in reqs}


def import_names(dist: str) -> set[str]:
    names = set(KNOWN_IMPORTS.get(dist, {dist.replace("-", "_")}))
    try:
        d = metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        return names
    top = d.read_text("top_level.txt")
    if top:
        names |= {line.strip() for line in top.splitlines() if line.strip()}
    for f in d.files or []:
        parts = Path(str(f)).parts
        if parts and not parts[0].endswith((".dist-info", ".data")) and parts[0] != "..":
            names.add(parts[0].removesuffix(".py"))
    return names


def test_no_top_level_name_shadows_a_dependency() -> None:
    dists = declared_distributions()
    assert {"docker", "torch", "pyzmq"} <= dists, dists
    imports = set().union(*(import_names(d) for d in dists))
    tops = {p.name.removesuffix(".py") for p in REPO.iterdir() if not p.name.startswith(".")}
    shadowing = sorted(tops & imports)
    assert not shadowing, (
        f"top-level {shadowing} of the repo would be imported instead of the dependency "
        "(pytest puts the repo first on sys.path): rename or move it"
    )


def test_no_registry_host_name_in_tracked_files() -> None:
    try:
        files = subprocess.run(
            ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
        ).stdout.split(b"\0")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no list of tracked files")
    pattern = re.compile("|".join(re.escape(h) for h in REGISTRY_HOSTS).encode(), re.IGNORECASE)
    found: list[str] = []
    for name in filter(None, files):
        path = REPO / name.decode()
        if not path.is_file():
            continue
        for n, line in enumerate(path.read_bytes().splitlines(), 1):
            m = pattern.search(line)
            if m:
                found.append(f"{name.decode()}:{n}: {m.group().decode()}")
    assert not found, (
        "registry/mirror host names written in tracked files (read apt sources / pip "
        "configuration or take an option instead):\n" + "\n".join(found[:30])
    )
