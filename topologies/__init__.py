"""Pure-data network topologies for the bcfl testbed: specs, link models and builders."""

from topologies.builders import (
    PUBLISHER_ID,
    CellularParams,
    DelayDist,
    FixedLink,
    HierarchyParams,
    build_hierarchy,
    validate_params,
)
from topologies.links import dbm_to_watt, shannon_rate_mbit, truncated_normal, watt_to_dbm
from topologies.spec import (
    LinkKind,
    LinkSpec,
    NodeKind,
    NodeSpec,
    TopologyError,
    TopologySpec,
)

__all__ = [
    "PUBLISHER_ID",
    "CellularParams",
    "DelayDist",
    "FixedLink",
    "HierarchyParams",
    "LinkKind",
    "LinkSpec",
    "NodeKind",
    "NodeSpec",
    "TopologyError",
    "TopologySpec",
    "build_hierarchy",
    "dbm_to_watt",
    "shannon_rate_mbit",
    "truncated_normal",
    "validate_params",
    "watt_to_dbm",
]
