"""Make a run's Linux bridges forward whatever Docker did to the host's firewall.

Installing Docker loads ``br_netfilter`` (``net.bridge.bridge-nf-call-iptables = 1``: frames
crossing any Linux bridge of the root namespace go through iptables' FORWARD chain) and sets
iptables' FORWARD policy to DROP. Bridged traffic between the mininet/containernet backends'
hosts and base stations is then dropped and devices never reach their MEC.

Why not the per-bridge switch: a bridge's own ``nf_call_iptables`` option
(``ip link set BR type bridge nf_call_iptables 0``) can only add netfilter calls; the kernel
calls iptables when the namespace's sysctl OR the bridge's option is on, so with Docker's
sysctl at 1 it changes nothing. Turning the sysctl off would change every bridge of the
machine, Docker's included.

What we do instead changes nothing but our own traffic: for each family whose
``bridge-nf-call-*`` sysctl is on and whose tool is installed, one rule at the head of
FORWARD that accepts frames bridged between the run's bridges (``-i TOKENs+ -o TOKENs+``:
every base-station bridge is named ``<token>s<i>``), tagged with a comment naming the run
token. `stop` deletes exactly the rules `start` inserted; `clean(token)` deletes every rule
tagged with a crashed run's token. Commands are argv data (see `tc.py`), tested as such.
ARP is not affected (Docker leaves arptables alone), nor are Open vSwitch bridges (their
datapath does not pass through br_netfilter).
"""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

COMMENT_PREFIX = "bcfl-run-"
SYSCTL_DIR = Path("/proc/sys/net/bridge")
# (tool, sysctl that sends bridged frames of its family through it)
FAMILIES: tuple[tuple[str, str], ...] = (
    ("iptables", "bridge-nf-call-iptables"),
    ("ip6tables", "bridge-nf-call-ip6tables"),
)
TOOLS = tuple(tool for tool, _ in FAMILIES)

Runner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True)


def comment(token: str) -> str:
    """The tag on every rule of the run with `token`."""
    return f"{COMMENT_PREFIX}{token}"


def rule(bridge_prefix: str, token: str) -> list[str]:
    """The rule (chain and match), without the tool and the operation."""
    wildcard = f"{bridge_prefix}+"
    return [
        "FORWARD", "-i", wildcard, "-o", wildcard,
        "-m", "comment", "--comment", comment(token), "-j", "ACCEPT",
    ]  # fmt: skip


def insert_argv(tool: str, bridge_prefix: str, token: str) -> list[str]:
    """Insert the run's rule at the head of FORWARD (`-w`: wait for the xtables lock)."""
    return [tool, "-w", "-I", *rule(bridge_prefix, token)]


def delete_argv(tool: str, bridge_prefix: str, token: str) -> list[str]:
    """Delete exactly the rule `insert_argv` inserted."""
    return [tool, "-w", "-D", *rule(bridge_prefix, token)]


def families_needed(
    sysctl: Callable[[str], str | None], which: Callable[[str], str | None]
) -> list[str]:
    """The tools whose bridged traffic goes through netfilter here: sysctl on, tool present."""
    return [tool for tool, name in FAMILIES if sysctl(name) == "1" and which(tool) is not None]


def read_sysctl(name: str, root: Path = SYSCTL_DIR) -> str | None:
    """A net.bridge sysctl's value, None where br_netfilter is absent."""
    try:
        return (root / name).read_text().strip()
    except OSError:
        return None


def tagged_rules(listing: str, token: str) -> list[list[str]]:
    """`-S FORWARD` output -> the argv (after the tool) deleting each rule tagged for token."""
    out: list[list[str]] = []
    for line in listing.splitlines():
        words = shlex.split(line)
        if words[:2] != ["-A", "FORWARD"]:
            continue
        tags = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--comment"]
        if comment(token) in tags:
            out.append(["-w", "-D", *words[1:]])
    return out


@dataclass
class BridgeForwarding:
    """The run's ACCEPT rules for its bridges: `start` inserts, `stop` removes them."""

    token: str
    bridge_prefix: str
    runner: Runner = _run
    sysctl: Callable[[str], str | None] = read_sysctl
    which: Callable[[str], str | None] = shutil.which
    added: list[str] = field(default_factory=list)

    def start(self) -> None:
        """Insert one rule per family that needs it; a failure is raised (nothing would
        reach the base stations), after removing what was inserted."""
        for tool in families_needed(self.sysctl, self.which):
            argv = insert_argv(tool, self.bridge_prefix, self.token)
            proc = self.runner(argv)
            if proc.returncode != 0:
                self.stop()
                raise RuntimeError(
                    f"cannot let the run's bridges forward ({' '.join(argv)}): "
                    f"{(proc.stderr or proc.stdout).strip()[:200]}"
                )
            self.added.append(tool)
            log.info("bridged traffic of %s* accepted by %s (br_netfilter is on)",
                     self.bridge_prefix, tool)  # fmt: skip

    def stop(self) -> None:
        """Delete the rules `start` inserted (a failure is logged; `bcfl clean` retries)."""
        while self.added:
            tool = self.added.pop()
            proc = self.runner(delete_argv(tool, self.bridge_prefix, self.token))
            if proc.returncode != 0:
                log.warning("could not delete the run's %s FORWARD rule: %s", tool,
                            (proc.stderr or proc.stdout).strip()[:200])  # fmt: skip


class HandledWarning(logging.Filter):
    """Drops Mininet's "Linux bridge may not work with net.bridge.bridge-nf-call-X = 1" for
    the families whose bridged traffic the run's rules accept (the warning is then wrong)."""

    def __init__(self, tools: list[str]) -> None:
        super().__init__()
        self.sysctls = [name for tool, name in FAMILIES if tool in tools]

    def filter(self, record: logging.LogRecord) -> bool:
        """False (drop) for the warning about a handled family."""
        msg = record.getMessage()
        return not ("Linux bridge may not work" in msg and any(s in msg for s in self.sysctls))


def clean(
    token: str,
    runner: Runner = _run,
    which: Callable[[str], str | None] = shutil.which,
    tools: Sequence[str] = TOOLS,
) -> list[str]:
    """Delete every FORWARD rule tagged with `token` (what a crashed run left)."""
    removed: list[str] = []
    for tool in tools:
        if which(tool) is None:
            continue
        listing = runner([tool, "-w", "-S", "FORWARD"])
        if listing.returncode != 0:
            continue
        for argv in tagged_rules(listing.stdout, token):
            if runner([tool, *argv]).returncode == 0:
                removed.append(f"{tool} rule {comment(token)}")
    return removed
