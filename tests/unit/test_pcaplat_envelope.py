"""orchestrator.pcaplat.envelope: (type, sender, seq) from a bcfl frame's first bytes."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from orchestrator.pcaplat.envelope import Header, HeaderIncomplete, NotBcfl, peek
from orchestrator.pcaplat.zmtp import HEAD_BYTES
from tests.unit.test_pcaplat_helpers import bcfl_frame


def test_the_header_of_a_real_frame_from_its_first_bytes() -> None:
    frame = bcfl_frame("mec0", "global", {"w": np.ones(50_000, np.float32)}, seq=2**40 + 3)
    assert peek(frame[:HEAD_BYTES]) == Header("global", "mec0", 2**40 + 3)


def test_the_longest_type_and_sender_fit_in_the_head() -> None:
    frame = msgpack.packb(["bcfl", 1, "t" * 32, "n" * 32, 2**63, b"x" * 9999, b"s" * 64])
    assert peek(frame[:HEAD_BYTES]) == Header("t" * 32, "n" * 32, 2**63)


def test_a_header_cut_short_raises_header_incomplete() -> None:
    frame = bcfl_frame("dev0-0", "update", {}, seq=5)
    with pytest.raises(HeaderIncomplete):
        peek(frame[:12])
    with pytest.raises(HeaderIncomplete):
        peek(b"")


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (msgpack.packb(["nope", 1, "update", "dev0-0", 1, b"", b""]), "magic"),
        (msgpack.packb(["bcfl", 2, "update", "dev0-0", 1, b"", b""]), "version"),
        (msgpack.packb(["bcfl", 1, "Update!", "dev0-0", 1, b"", b""]), "type"),
        (msgpack.packb(["bcfl", 1, "update", "Dev 0", 1, b"", b""]), "sender"),
        (msgpack.packb(["bcfl", 1, "update", "dev0-0", -1, b"", b""]), "sequence"),
        (msgpack.packb(["bcfl", 1, "update", "dev0-0", 1.5, b"", b""]), "sequence"),
        (msgpack.packb(["bcfl", 1, "update"]), "array of 3"),
        (msgpack.packb({"bcfl": 1}), "not msgpack"),
        (b"GET / HTTP/1.1\r\n", "not msgpack"),
        (b"\xdd\xff\xff\xff\xff" + b"\x00" * 20, "4294967295 items"),  # read, not allocated
        (b"\xdb\xff\xff\xff\xff", "not msgpack"),  # a 4 GB string claim
    ],
)
def test_a_payload_that_is_not_a_bcfl_frame_raises_not_bcfl(payload: bytes, why: str) -> None:
    with pytest.raises(NotBcfl, match=why):
        peek(payload[:HEAD_BYTES])
