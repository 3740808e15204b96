"""Unit tests for the GMUC task request and the devices' responses (two-layer Steps 1-2): the
publisher states the requirements, a MEC submits its devices' signed responses, the contract
checks each device's signature and records whether it meets the requirements."""

from __future__ import annotations

from typing import Any

import pytest

from node.contracts import gmuc_request
from node.keys import NodeKey

from .test_contracts import DEV1, DEV2, GENESIS, MEC, PUB, Chain

TASK = {"task_id": "t1", "reward_pool": 100, "rounds": 3, "model": "mlp", "dataset": "digits"}
REQ = {"task_id": "t1", "min_samples": 50, "min_cpu_mhz": 1000, "min_energy_j": 10}
NEUTRAL = [0, 0, 1_000_000]


def response(
    key: NodeKey, device: str, samples: int = 80, cpu: int = 1500, energy: int = 20, **over: Any
) -> dict[str, Any]:
    """A gmuc.respond payload signed by `key`."""
    resources = {"samples": samples, "cpu_mhz": cpu, "energy_j": energy}
    message = gmuc_request.response_message(GENESIS.chain_id, "t1", device, resources, NEUTRAL)
    return {
        "task_id": "t1",
        "device": device,
        **resources,
        "opinion": NEUTRAL,
        "signature": key.sign(message),
        **over,
    }


def requested() -> Chain:
    chain = Chain()
    chain.ok(PUB, "task.publish", TASK)
    event = chain.ok(PUB, "gmuc.request", REQ).events[0]
    assert event.data == {**REQ, "reward_pool": 100, "rounds": 3}
    return chain


def test_responses_are_recorded_with_whether_they_meet_the_requirements() -> None:
    chain = requested()

    chain.ok(MEC, "gmuc.respond", response(DEV1, "dev1"))
    low = chain.ok(MEC, "gmuc.respond", response(DEV2, "dev2", cpu=999))

    assert low.events[0].data == {"task_id": "t1", "device": "dev2", "eligible": False}
    assert gmuc_request.eligible(chain.state, "t1", ["dev1", "dev2", "dev3"]) == ["dev1"]
    entry = gmuc_request.get_response(chain.state, "t1", "dev1")
    assert entry is not None and entry["mec"] == "mec" and entry["samples"] == 80


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (response(DEV2, "dev1"), "signature"),  # signed by another device
        ({**response(DEV1, "dev1"), "samples": 81}, "signature"),  # altered after signing
        (response(DEV1, "dev1", opinion=[1_000_000, 0, 0]), "signature"),  # not the signed one
        ({**response(DEV1, "dev1"), "opinion": [1, 0, 0]}, "opinion"),
        (response(MEC, "mec"), "not a registered device"),
        (response(DEV1, "dev1", task_id="t2"), "no request"),
    ],
)
def test_a_bad_response_is_refused(payload: dict[str, Any], match: str) -> None:
    chain = requested()
    chain.refused(MEC, "gmuc.respond", payload, match)
    assert gmuc_request.get_response(chain.state, "t1", "dev1") is None


def test_only_a_mec_responds_once_per_device_after_the_request() -> None:
    chain = Chain()
    chain.ok(PUB, "task.publish", TASK)
    chain.refused(MEC, "gmuc.respond", response(DEV1, "dev1"), "no request")
    chain.refused(DEV1, "gmuc.request", REQ, "only the publisher")
    chain.ok(PUB, "gmuc.request", REQ)
    chain.refused(PUB, "gmuc.request", REQ, "already has a request")
    chain.refused(DEV1, "gmuc.respond", response(DEV1, "dev1"), "needs 'mec'")
    chain.ok(MEC, "gmuc.respond", response(DEV1, "dev1"))
    chain.refused(MEC, "gmuc.respond", response(DEV1, "dev1"), "already answered")
