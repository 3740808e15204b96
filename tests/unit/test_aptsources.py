"""The Debian mirror read from the machine's apt sources (one-line and deb822 formats)."""

from __future__ import annotations

from pathlib import Path

import pytest

from topologies.backends.aptsources import (
    MirrorError,
    parse_deb822,
    parse_one_line,
    read_sources,
    resolve_mirror,
)

PROXY = "http://apt-proxy.example:3142/debian"


def test_one_line_format_with_options_and_comments() -> None:
    text = (
        "# deb http://old.example/debian bookworm main\n"
        f"deb [arch=amd64 signed-by=/k.gpg] {PROXY}/ bookworm main contrib # mine\n"
        "deb-src http://src.example/debian bookworm main\n"
    )
    (src,) = parse_one_line(text)
    assert (src.uri, src.suite, src.components) == (PROXY + "/", "bookworm", ("main", "contrib"))


def test_deb822_format_with_several_uris_and_a_disabled_stanza() -> None:
    text = (
        "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nComponents: main\n"
        "Enabled: no\n\n"
        "# a comment\nTypes: deb deb-src\n"
        f"URIs: {PROXY}\n http://second.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\nSigned-By: /k.gpg\n"
    )
    got = [(s.uri, s.suite) for s in parse_deb822(text)]
    assert got == [
        (PROXY, "bookworm"),
        (PROXY, "bookworm-updates"),
        ("http://second.example/debian", "bookworm"),
        ("http://second.example/debian", "bookworm-updates"),
    ]


def test_the_first_debian_main_archive_wins_in_apts_order(tmp_path: Path) -> None:
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (tmp_path / "sources.list").write_text("# nothing here\n")
    (d / "a-security.sources").write_text(
        "Types: deb\nURIs: http://sec.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n"
    )
    (d / "b-thirdparty.list").write_text("deb https://vendor.example/apt stable main\n")
    (d / "c-debian.sources").write_text(
        f"Types: deb\nURIs: {PROXY}/\nSuites: bookworm bookworm-updates\nComponents: main\n"
    )
    (d / "d-disabled.list.disabled").write_text("deb http://no.example/debian bookworm main\n")
    assert len(read_sources(tmp_path)) == 4
    assert resolve_mirror(root=tmp_path) == PROXY
    assert resolve_mirror("http://given.example/debian/", root=tmp_path) == (
        "http://given.example/debian"
    )


def test_no_mirror_anywhere_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MirrorError, match=r"give one with --mirror URL"):
        resolve_mirror(root=tmp_path)
