"""node.limits: the soft RLIMIT_NOFILE is raised to the hard limit, never lowered."""

from __future__ import annotations

import logging
import resource
from collections.abc import Iterator

import pytest

from node.limits import ZMQ_DEFAULT_MAX_SOCKETS, fds_needed, raise_nofile, zmq_max_sockets


@pytest.fixture
def restore_nofile() -> Iterator[tuple[int, int]]:
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        yield limits
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)


def test_soft_limit_is_raised_to_the_hard_limit(restore_nofile: tuple[int, int]) -> None:
    _soft, hard = restore_nofile
    if hard == resource.RLIM_INFINITY or hard <= 64:
        pytest.skip(f"hard RLIMIT_NOFILE is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))

    assert raise_nofile() == (hard, hard)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)


def test_a_need_above_the_hard_limit_is_named_in_a_warning(
    restore_nofile: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    _soft, hard = restore_nofile
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard RLIMIT_NOFILE")
    with caplog.at_level(logging.WARNING, logger="node.limits"):
        raise_nofile(need=hard + 1)
    assert f"hard {hard}" in caplog.text and "ulimit -Hn" in caplog.text


def test_sizes_grow_with_the_peer_count() -> None:
    assert zmq_max_sockets(0) == ZMQ_DEFAULT_MAX_SOCKETS
    assert zmq_max_sockets(5000) >= 5001
    assert fds_needed(1200) >= 3 * 1200
