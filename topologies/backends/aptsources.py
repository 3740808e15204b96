"""The Debian mirror this machine already uses, read from its own apt sources.

The node image (`bcfl image build --offline`) and the QEMU test VM (`vm/test-in-qemu.sh`)
debootstrap Debian; the mirror they use is the one the machine is configured for (its
mirror, its proxy, its snapshot), never a host name written into the project:

1. an explicit value (`--mirror`, `BCFL_DEBIAN_MIRROR`, `BCFL_VM_MIRROR`) wins;
2. else the first `deb` source of the Debian archive ("main" component, not a security or
   updates suite) in `/etc/apt/sources.list`, then `/etc/apt/sources.list.d/*.list` and
   `*.sources` (deb822), in apt's order;
3. else an error that says how to give one.

Standard library only: `python3 topologies/backends/aptsources.py` prints the mirror
(for the shell scripts under vm/), exit 1 with a one-line error when there is none.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

APT_ROOT = Path("/etc/apt")


class MirrorError(RuntimeError):
    """No Debian mirror configured and none given; the message says what to do."""


@dataclass(frozen=True)
class AptSource:
    """One `deb` line (or one URI of a deb822 stanza)."""

    uri: str
    suite: str
    components: tuple[str, ...]
    origin: str  # the file it came from


def _strip_options(words: list[str]) -> list[str]:
    """`deb [arch=amd64 signed-by=...] URI ...` -> the words without the [...] block."""
    if words and words[0].startswith("["):
        for i, w in enumerate(words):
            if w.endswith("]"):
                return words[i + 1 :]
        return []
    return words


def parse_one_line(text: str, origin: str = "") -> list[AptSource]:
    """One-line-style sources (`sources.list`, `*.list`)."""
    out: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        words = line.split()
        if len(words) < 3 or words[0] != "deb":
            continue
        rest = _strip_options(words[1:])
        if len(rest) < 2:
            continue
        out.append(AptSource(rest[0], rest[1], tuple(rest[2:]), origin))
    return out


def _deb822_stanzas(text: str) -> Iterator[dict[str, str]]:
    fields: dict[str, str] = {}
    key = ""
    for raw in [*text.splitlines(), ""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if fields:
                yield fields
            fields, key = {}, ""
            continue
        if raw[0] in " \t" and key:
            fields[key] += " " + raw.strip()
            continue
        name, sep, value = raw.partition(":")
        if sep:
            key = name.strip().lower()
            fields[key] = value.strip()


def parse_deb822(text: str, origin: str = "") -> list[AptSource]:
    """deb822-style sources (`*.sources`)."""
    out: list[AptSource] = []
    for st in _deb822_stanzas(text):
        if "deb" not in st.get("types", "").split():
            continue
        if st.get("enabled", "yes").lower() == "no":
            continue
        comps = tuple(st.get("components", "").split())
        for uri in st.get("uris", "").split():
            for suite in st.get("suites", "").split():
                out.append(AptSource(uri, suite, comps, origin))
    return out


def read_sources(root: Path = APT_ROOT) -> list[AptSource]:
    """Every `deb` source of the machine, in apt's order (sources.list, then the directory)."""
    out: list[AptSource] = []
    main = root / "sources.list"
    if main.is_file():
        out += parse_one_line(main.read_text(errors="replace"), str(main))
    d = root / "sources.list.d"
    if d.is_dir():
        for p in sorted(d.iterdir()):
            if not p.is_file():
                continue
            if p.suffix == ".list":
                out += parse_one_line(p.read_text(errors="replace"), str(p))
            elif p.suffix == ".sources":
                out += parse_deb822(p.read_text(errors="replace"), str(p))
    return out


def _is_debian_archive(src: AptSource) -> bool:
    suite = src.suite.lower()
    if "main" not in src.components:
        return False
    if "security" in suite or "security" in src.uri.lower():
        return False
    if suite.endswith(("-updates", "-backports", "-proposed-updates")):
        return False
    return "debian" in src.uri.lower()  # not an Ubuntu or third-party archive


def debian_mirror(sources: Iterable[AptSource]) -> str | None:
    """The first Debian archive's URI ("main", not security/updates), without a trailing /."""
    for src in sources:
        if _is_debian_archive(src):
            return src.uri.rstrip("/")
    return None


def resolve_mirror(explicit: str = "", root: Path = APT_ROOT, option: str = "--mirror") -> str:
    """The explicit mirror, else the machine's own; MirrorError naming `option` otherwise."""
    if explicit:
        return explicit.rstrip("/")
    found = debian_mirror(read_sources(root))
    if found:
        return found
    raise MirrorError(
        f"no Debian mirror: none in {root}/sources.list or {root}/sources.list.d/ "
        f"(no 'deb' source with component main); give one with {option} URL"
    )


def main(argv: list[str]) -> int:
    explicit = argv[1] if len(argv) > 1 else ""
    option = argv[2] if len(argv) > 2 else "BCFL_VM_MIRROR"
    try:
        print(resolve_mirror(explicit, option=option))
    except MirrorError as exc:
        print(f"bcfl: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
