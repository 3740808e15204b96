"""The sfl scheme's parameters and plan (the protocol: see the package docstring)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pydantic import Field

from node.roles.base import Role
from node.schemes.base import Plan, PlanInputs, SchemeParams
from node.schemes.vanilla.scheme import VanillaScheme
from topologies import LinkKind, NodeKind, TopologySpec


class SflParams(SchemeParams):
    """``scheme: {name: sfl, threshold: 0.8, test_groups: 10, group_size: 1000, ...}``."""

    threshold: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description=(
            "the contract's accuracy threshold: an update whose accuracy on the round's "
            "disclosed test group is below it is not aggregated and its device is not paid "
            "(the paper sets it at the average accuracy AA of lambda = 5 %, EMD = 1.5; "
            "scenarios/paper-sfl/reproduce.py measures it)"
        ),
    )
    test_groups: int = Field(
        4,
        ge=1,
        le=256,
        description=(
            "data groups the publisher splits its test set into and commits at init(); "
            "round r discloses group order[(r-1) mod groups]"
        ),
    )
    group_size: int = Field(
        90,
        ge=1,
        le=100_000,
        description=(
            "test samples per data group (groups x size <= the test set's size: digits 360, "
            "MNIST 10,000)"
        ),
    )
    disclose: bool = Field(
        True,
        description=(
            "whether the aggregator calls disclosure_test_data(); false: it never does, "
            "and the evaluators fall back to a seeded sample of the training set (the paper)"
        ),
    )
    self_evaluate: bool = Field(
        False,
        description=(
            "a device evaluates its noised update on its own training data and withholds it "
            "when below the threshold (the paper's gas-saving step, section IV-B)"
        ),
    )
    pretrain_samples: int = Field(
        0,
        ge=0,
        le=1_000_000,
        description=(
            "the publisher pre-trains the initial global model on this many training samples "
            "(the paper's 'pre-trained global model on a public dataset'; a seeded sample of "
            "the training set stands in for the public data: our choice); 0: no pre-training"
        ),
    )
    pretrain_epochs: int = Field(
        1, ge=1, le=1000, description="epochs of the publisher's pre-training (pretrain_samples)"
    )
    evaluation_timeout_s: float = Field(
        120.0,
        gt=0.0,
        le=3600.0,
        description=(
            "how long the publisher waits for a quorum of the evaluators' transactions in "
            "one phase before it ends the run (PBFT evaluators; a single writer evaluates itself)"
        ),
    )


class SflScheme(VanillaScheme):
    """SFL (paper 004): devices train with local DP and submit to the task contract; the
    chain's validators evaluate every update on committed, then disclosed, test data; only
    qualified updates are averaged and only qualified devices are paid."""

    name = "sfl"
    summary = (
        "SFL: a task contract with committed test data (init, submit_model_update, "
        "disclosure_test_data, evaluate_local_model, aggregate_model_update, evaluate_model, "
        "finalize_contract, post_evaluation); updates below the accuracy threshold are not "
        "aggregated and their devices not paid; evaluated by the publisher (ledger.consensus: "
        "single) or by the MECs as PBFT validators (pbft)"
    )
    Params = SflParams

    def plan(self, topology: TopologySpec, keys: Mapping[str, bytes], inputs: PlanInputs) -> Plan:
        """Vanilla's plan (one task chain on every node); SFL has no D2D links."""
        if any(link.kind == LinkKind.D2D for link in topology.links):
            raise ValueError(
                "topology.d2d: D2D links are invalid for scheme sfl (it has none, and a "
                "300-device MEC would get 44,850); allowed: off"
            )
        return super().plan(topology, keys, inputs)

    def check_data(self, train: int, test: int) -> None:
        """The committed test groups must fit in the test set."""
        p = self.params
        assert isinstance(p, SflParams)
        if p.test_groups * p.group_size > test:
            raise ValueError(
                f"scheme.group_size: {p.group_size} is invalid; allowed: test_groups x "
                f"group_size <= {test} test samples (test_groups: {p.test_groups}, so at "
                f"most {test // p.test_groups})"
            )

    def light_replica(self, kind: NodeKind, inputs: PlanInputs) -> bool:
        """As vanilla: devices (and, with a single writer, MECs) keep light replicas; a PBFT
        MEC evaluates and reads the contract's state, so it keeps a full one."""
        return self._light(kind, inputs)

    def role_factories(self) -> Mapping[str, Callable[[], Role]]:
        """publisher (task publisher and aggregator), mec (relay; PBFT evaluator), device."""
        from node.schemes.sfl.device import SflDeviceRole
        from node.schemes.sfl.mec import SflMecRole
        from node.schemes.sfl.publisher import SflPublisherRole

        return {
            str(NodeKind.PUBLISHER): SflPublisherRole,
            str(NodeKind.MEC): SflMecRole,
            str(NodeKind.DEVICE): SflDeviceRole,
        }
