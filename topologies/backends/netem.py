"""Find out whether this kernel has netem, and run tc/ip command lines.

How it works
------------
`probe_netem` answers "can the kernel shape delay?" by trying it, not by reading module
lists (kernels without loadable modules have no modules.* files to read):

1. without root, or without the ``ip`` or ``tc`` binaries, it answers no at once;
2. it creates a scratch network namespace named ``bcfl-probe-<pid>-<random hex>``, so that
   nothing in the caller's namespace is touched and concurrent probes never collide;
3. inside it, it creates a veth pair (the ``dummy`` link type may be missing too) and runs
   ``tc qdisc add dev IF root netem delay 1ms``; on success it checks that
   ``tc qdisc show`` lists the netem qdisc;
4. it always deletes that namespace, by that exact name, whatever happened.

The answer (`NetemProbe`: available, and the reason, e.g. tc's stderr) is cached per
process. `apply_argv` runs argv lists such as those of `topologies.backends.tc`, optionally
inside a named namespace, and raises RuntimeError naming the failing command.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import shlex
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

PROBE_PREFIX = "bcfl-probe-"
_PROBE_IF = "probe0"
_PROBE_PEER = "probe1"


@dataclass(frozen=True)
class NetemProbe:
    """Whether the kernel's netem qdisc works here, and why (not)."""

    available: bool
    reason: str


def netns_argv(netns: str | None, argv: Sequence[str]) -> list[str]:
    """Return `argv`, wrapped in ``ip netns exec NETNS`` when a namespace is given."""
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)


def apply_argv(
    argvs: Sequence[Sequence[str]], netns: str | None = None, timeout_s: float = 10.0
) -> None:
    """Run each argv in order (inside namespace `netns` if given); stop at the first failure.

    Raises RuntimeError naming the command, its exit status and its stderr.
    """
    for argv in argvs:
        cmd = netns_argv(netns, argv)
        log.debug("running %s", shlex.join(cmd))
        try:
            done = subprocess.run(
                cmd, check=True, capture_output=True, text=True, timeout=timeout_s
            )
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(
                f"command failed (exit {exc.returncode}): {shlex.join(cmd)}: "
                f"{(exc.stderr or '').strip()}"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"command timed out after {timeout_s}s: {shlex.join(cmd)}") from exc
        except OSError as exc:
            raise RuntimeError(f"command could not start: {shlex.join(cmd)}: {exc}") from exc
        if done.stderr.strip():
            log.debug("%s said: %s", shlex.join(cmd), done.stderr.strip())


def _run(argv: list[str], deadline: float) -> subprocess.CompletedProcess[str]:
    """Run one probe command without raising on failure, bounded by `deadline`."""
    left = max(0.1, deadline - time.monotonic())
    return subprocess.run(argv, capture_output=True, text=True, timeout=left, check=False)


def _why(done: subprocess.CompletedProcess[str]) -> str:
    """Describe a failed command: its argv, exit status and stderr."""
    err = (done.stderr or done.stdout or "").strip() or "no message"
    return f"`{shlex.join(done.args)}` failed (exit {done.returncode}): {err}"


def _try_netem(ns: str, deadline: float) -> NetemProbe:
    """Inside existing namespace `ns`, try a netem root qdisc on a fresh veth."""
    done = _run(
        ["ip", "-n", ns, "link", "add", _PROBE_IF, "type", "veth", "peer", "name", _PROBE_PEER],
        deadline,
    )
    if done.returncode != 0:
        return NetemProbe(False, f"could not create a probe interface: {_why(done)}")
    done = _run(
        ["tc", "-n", ns, "qdisc", "add", "dev", _PROBE_IF, "root", "netem", "delay", "1ms"],
        deadline,
    )
    if done.returncode != 0:
        return NetemProbe(False, f"netem qdisc unavailable: {_why(done)}")
    shown = _run(["tc", "-n", ns, "qdisc", "show", "dev", _PROBE_IF], deadline)
    if shown.returncode != 0 or "netem" not in shown.stdout:
        return NetemProbe(
            False, f"netem qdisc accepted but not listed by tc qdisc show: {shown.stdout!r}"
        )
    return NetemProbe(True, "tc qdisc add ... netem delay 1ms succeeded in a scratch namespace")


@functools.cache
def probe_netem(timeout_s: float = 5.0) -> NetemProbe:
    """Try a netem qdisc in a scratch namespace; cached per process.

    Needs root and the ``ip`` and ``tc`` binaries; `timeout_s` bounds the whole probe.
    """
    if os.geteuid() != 0:
        return NetemProbe(False, "not root: creating a network namespace needs root")
    missing = [b for b in ("ip", "tc") if shutil.which(b) is None]
    if missing:
        return NetemProbe(False, f"missing binaries on PATH: {', '.join(missing)}")
    deadline = time.monotonic() + timeout_s
    ns = f"{PROBE_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    created: bool | None = None  # None: unknown (`ip netns add` timed out or did not start)
    try:
        done = _run(["ip", "netns", "add", ns], deadline)
        created = done.returncode == 0
        if not created:
            result = NetemProbe(False, f"could not create a scratch namespace: {_why(done)}")
        else:
            result = _try_netem(ns, deadline)
    except subprocess.TimeoutExpired as exc:
        result = NetemProbe(False, f"probe timed out after {timeout_s}s running {exc.cmd!r}")
    except OSError as exc:
        result = NetemProbe(False, f"probe could not run a command: {exc}")
    finally:
        if created is not False:
            _delete_netns(ns)
    log.info("netem probe: available=%s (%s)", result.available, result.reason)
    return result


def _delete_netns(ns: str) -> None:
    """Delete our probe namespace `ns`, by its exact name."""
    try:
        done = subprocess.run(
            ["ip", "netns", "del", ns], capture_output=True, text=True, timeout=10, check=False
        )
    except (subprocess.TimeoutExpired, OSError) as exc:
        log.warning("could not delete probe namespace %s: %s", ns, exc)
        return
    if done.returncode != 0:
        log.warning("could not delete probe namespace %s: %s", ns, done.stderr.strip())
