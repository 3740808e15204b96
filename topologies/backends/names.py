"""The names of the backends and of their options, in one light module (no Mininet, no torch):
the scenario schema, the CLI's choices and the backends all take them from here."""

from __future__ import annotations

from typing import Literal, get_args

Backend = Literal["local", "mininet", "containernet", "mininet-cluster"]
Switch = Literal["linux", "ovs-user"]
DelayMode = Literal["kernel", "userspace"]
Shaping = Literal["userspace", "none"]

BACKENDS: tuple[str, ...] = get_args(Backend)
SWITCHES: tuple[str, ...] = get_args(Switch)
DELAY_MODES: tuple[str, ...] = get_args(DelayMode)
SHAPINGS: tuple[str, ...] = get_args(Shaping)
