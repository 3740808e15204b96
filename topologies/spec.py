"""Pure-data topology description: nodes, directed links, validation and routing."""

from __future__ import annotations

import logging
import math
import re
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

logger = logging.getLogger(__name__)

NODE_ID_RE = re.compile(r"[a-z][a-z0-9-]{0,31}")

# Which kind a node's parent must have, per node kind (None: the node has no parent).
_PARENT_KIND: dict[str, str | None] = {
    "bs": None,
    "mec": "bs",
    "device": "mec",
    "publisher": "mec",
}


class TopologyError(ValueError):
    """A topology value is invalid; message names field, value and what is allowed."""

    def __init__(self, field: str, value: object, allowed: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field}: {value!r} is invalid; allowed: {allowed}")


class NodeKind(StrEnum):
    """The role a node plays in the hierarchy."""

    BS = "bs"
    MEC = "mec"
    DEVICE = "device"
    PUBLISHER = "publisher"


class LinkKind(StrEnum):
    """The physical medium a link models."""

    CELLULAR = "cellular"
    D2D = "d2d"
    BACKHAUL = "backhaul"
    FRONTHAUL = "fronthaul"
    LAN = "lan"


@dataclass(frozen=True)
class NodeSpec:
    """One node: a base station (switch) or a process-running MEC, device or publisher."""

    id: str
    kind: NodeKind
    parent: str | None = None

    @property
    def runs_daemon(self) -> bool:
        """Whether this node runs a process (a BS is only a switch)."""
        return self.kind != NodeKind.BS


@dataclass(frozen=True)
class LinkSpec:
    """One DIRECTED link src -> dst (a physical link is two LinkSpecs, one per direction)."""

    src: str
    dst: str
    kind: LinkKind
    bandwidth_mbit: float
    delay_ms: float
    jitter_ms: float = 0.0
    loss_pct: float = 0.0


def _is_number(value: object) -> bool:
    """Return True for a finite int/float that is not a bool."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _check_link_numbers(link: LinkSpec) -> None:
    """Raise TopologyError if a link's numeric attributes are out of range."""
    where = f"links[{link.src}->{link.dst}]"
    checks: tuple[tuple[str, float, bool, str], ...] = (
        ("bandwidth_mbit", link.bandwidth_mbit, True, "a finite number > 0"),
        ("delay_ms", link.delay_ms, False, "a finite number >= 0"),
        ("jitter_ms", link.jitter_ms, False, "a finite number >= 0"),
    )
    for name, value, strict, allowed in checks:
        if not _is_number(value) or (value <= 0 if strict else value < 0):
            raise TopologyError(f"{where}.{name}", value, allowed)
    if not _is_number(link.loss_pct) or not 0 <= link.loss_pct < 100:
        raise TopologyError(f"{where}.loss_pct", link.loss_pct, "a number with 0 <= x < 100")


@dataclass(frozen=True)
class TopologySpec:
    """A validated, immutable topology: nodes plus directed links, with cached routing."""

    nodes: tuple[NodeSpec, ...]
    links: tuple[LinkSpec, ...]
    _by_id: dict[str, NodeSpec] = field(init=False, repr=False, compare=False)
    _out: dict[str, tuple[LinkSpec, ...]] = field(init=False, repr=False, compare=False)
    _link_by_pair: dict[tuple[str, str], LinkSpec] = field(init=False, repr=False, compare=False)
    _routes: dict[str, dict[str, tuple[LinkSpec, ...]]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "links", tuple(self.links))
        object.__setattr__(self, "_routes", {})
        self.validate()

    def validate(self) -> TopologySpec:
        """Check every invariant, raising TopologyError on the first violation; return self."""
        by_id = self._validate_nodes()
        pairs = self._validate_links(by_id)
        out: dict[str, list[LinkSpec]] = {n.id: [] for n in self.nodes}
        for link in self.links:
            out[link.src].append(link)
        out_sorted = {nid: tuple(sorted(ls, key=lambda lk: lk.dst)) for nid, ls in out.items()}
        object.__setattr__(self, "_by_id", by_id)
        object.__setattr__(self, "_out", out_sorted)
        object.__setattr__(self, "_link_by_pair", pairs)
        object.__setattr__(self, "_routes", {})
        self._validate_connected()
        return self

    def _validate_nodes(self) -> dict[str, NodeSpec]:
        """Check node ids, kinds and parents; return the id -> node map."""
        if not self.nodes:
            raise TopologyError("nodes", self.nodes, "at least one node")
        by_id: dict[str, NodeSpec] = {}
        for node in self.nodes:
            if not isinstance(node, NodeSpec):
                raise TopologyError("nodes", node, "NodeSpec instances")
            if not isinstance(node.id, str) or not NODE_ID_RE.fullmatch(node.id):
                raise TopologyError("node.id", node.id, f"ids matching {NODE_ID_RE.pattern}")
            if node.id in by_id:
                raise TopologyError("node.id", node.id, "unique node ids")
            if node.kind not in tuple(NodeKind):
                raise TopologyError(f"nodes[{node.id}].kind", node.kind, _kinds(NodeKind))
            by_id[node.id] = node
        for node in self.nodes:
            want = _PARENT_KIND[str(node.kind)]
            where = f"nodes[{node.id}].parent"
            if want is None:
                if node.parent is not None:
                    raise TopologyError(where, node.parent, f"None for a {node.kind} node")
                continue
            parent = by_id.get(node.parent) if isinstance(node.parent, str) else None
            if parent is None:
                raise TopologyError(where, node.parent, f"the id of an existing {want} node")
            if parent.kind != want:
                raise TopologyError(where, node.parent, f"the id of a {want} node")
        return by_id

    def _validate_links(self, by_id: dict[str, NodeSpec]) -> dict[tuple[str, str], LinkSpec]:
        """Check link endpoints, uniqueness, ranges and reverses; return the pair map."""
        pairs: dict[tuple[str, str], LinkSpec] = {}
        for link in self.links:
            if not isinstance(link, LinkSpec):
                raise TopologyError("links", link, "LinkSpec instances")
            for end in ("src", "dst"):
                value = getattr(link, end)
                if value not in by_id:
                    raise TopologyError(f"link.{end}", value, "known node ids")
            if link.src == link.dst:
                raise TopologyError("link.dst", link.dst, f"a node other than src {link.src!r}")
            if link.kind not in tuple(LinkKind):
                raise TopologyError(
                    f"links[{link.src}->{link.dst}].kind", link.kind, _kinds(LinkKind)
                )
            _check_link_numbers(link)
            key = (link.src, link.dst)
            if key in pairs:
                raise TopologyError("links", f"{link.src}->{link.dst}", "one link per direction")
            pairs[key] = link
        for src, dst in pairs:
            if (dst, src) not in pairs:
                raise TopologyError(
                    "links", f"{src}->{dst}", f"links with a reverse link {dst}->{src}"
                )
        return pairs

    def _validate_connected(self) -> None:
        """Check that every daemon node can reach every other over the links."""
        daemons = [n.id for n in self.nodes if n.runs_daemon]
        if len(daemons) < 2:
            return
        seen = {daemons[0]}
        queue = deque([daemons[0]])
        while queue:
            for link in self._out[queue.popleft()]:
                if link.dst not in seen:
                    seen.add(link.dst)
                    queue.append(link.dst)
        for nid in daemons:
            if nid not in seen:
                raise TopologyError(
                    "links", nid, "a connected topology (every daemon reachable from every other)"
                )

    def node(self, node_id: str) -> NodeSpec:
        """Return the node with this id."""
        try:
            return self._by_id[node_id]
        except KeyError:
            raise TopologyError("node", node_id, "known node ids") from None

    def daemons(self) -> tuple[NodeSpec, ...]:
        """Return the nodes that run a process, in spec order."""
        return tuple(n for n in self.nodes if n.runs_daemon)

    def of_kind(self, kind: NodeKind) -> tuple[NodeSpec, ...]:
        """Return the nodes of one kind, in spec order."""
        return tuple(n for n in self.nodes if n.kind == kind)

    def devices_per_mec(self) -> dict[str, int]:
        """MEC id -> the number of devices whose parent it is, in spec order (every MEC)."""
        counts = {n.id: 0 for n in self.of_kind(NodeKind.MEC)}
        for n in self.of_kind(NodeKind.DEVICE):
            if n.parent in counts:
                counts[n.parent] += 1
        return counts

    def physical_links(self) -> tuple[LinkSpec, ...]:
        """One directed link per physical link (cable or radio): the first of each pair of
        directions, in spec order."""
        seen: set[frozenset[str]] = set()
        out = []
        for link in self.links:
            pair = frozenset((link.src, link.dst))
            if pair not in seen:
                seen.add(pair)
                out.append(link)
        return tuple(out)

    def links_from(self, node_id: str) -> tuple[LinkSpec, ...]:
        """Return the links leaving a node, sorted by destination id."""
        self.node(node_id)
        return self._out[node_id]

    def link(self, src: str, dst: str) -> LinkSpec:
        """Return the directed link src -> dst."""
        self.node(src)
        self.node(dst)
        try:
            return self._link_by_pair[(src, dst)]
        except KeyError:
            raise TopologyError("link", f"{src}->{dst}", "existing directed links") from None

    def route(self, src: str, dst: str) -> tuple[LinkSpec, ...]:
        """Return the fewest-hops path src -> dst as directed links (BFS, sorted-id tie-break)."""
        self.node(src)
        self.node(dst)
        if src == dst:
            return ()
        tree = self._routes.get(src)
        if tree is None:
            tree = self._bfs_routes(src)
            self._routes[src] = tree
        try:
            return tree[dst]
        except KeyError:
            raise TopologyError("route", f"{src}->{dst}", "reachable destinations") from None

    def _bfs_routes(self, src: str) -> dict[str, tuple[LinkSpec, ...]]:
        """Compute fewest-hops routes from src to every reachable node."""
        routes: dict[str, tuple[LinkSpec, ...]] = {src: ()}
        queue = deque([src])
        while queue:
            here = queue.popleft()
            for link in self._out[here]:  # already sorted by dst id
                if link.dst not in routes:
                    routes[link.dst] = (*routes[here], link)
                    queue.append(link.dst)
        logger.debug("computed %d routes from %s", len(routes) - 1, src)
        return routes

    def to_dict(self) -> dict[str, Any]:
        """Return a plain JSON-able dict describing this topology."""
        return {
            "nodes": [{"id": n.id, "kind": str(n.kind), "parent": n.parent} for n in self.nodes],
            "links": [
                {
                    "src": lk.src,
                    "dst": lk.dst,
                    "kind": str(lk.kind),
                    "bandwidth_mbit": lk.bandwidth_mbit,
                    "delay_ms": lk.delay_ms,
                    "jitter_ms": lk.jitter_ms,
                    "loss_pct": lk.loss_pct,
                }
                for lk in self.links
            ],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TopologySpec:
        """Build (and validate) a TopologySpec from a dict produced by to_dict."""
        if not isinstance(d, dict):
            raise TopologyError("topology", d, "a dict with 'nodes' and 'links'")
        nodes = tuple(_node_from_dict(i, nd) for i, nd in enumerate(_list(d, "nodes")))
        links = tuple(_link_from_dict(i, ld) for i, ld in enumerate(_list(d, "links")))
        return cls(nodes=nodes, links=links)


def _kinds(enum: type[StrEnum]) -> str:
    """Describe the allowed values of a StrEnum."""
    return ", ".join(str(m) for m in enum)


def _list(d: dict[str, Any], key: str) -> list[Any]:
    """Return d[key] as a list, or raise TopologyError."""
    value = d.get(key)
    if not isinstance(value, list | tuple):
        raise TopologyError(key, value, "a list")
    return list(value)


def _node_from_dict(i: int, nd: Any) -> NodeSpec:
    """Parse one node dict."""
    if not isinstance(nd, dict) or "id" not in nd or "kind" not in nd:
        raise TopologyError(f"nodes[{i}]", nd, "a dict with 'id', 'kind' and 'parent'")
    try:
        kind = NodeKind(nd["kind"])
    except ValueError:
        raise TopologyError(f"nodes[{i}].kind", nd["kind"], _kinds(NodeKind)) from None
    return NodeSpec(id=nd["id"], kind=kind, parent=nd.get("parent"))


def _link_from_dict(i: int, ld: Any) -> LinkSpec:
    """Parse one link dict."""
    required = ("src", "dst", "kind", "bandwidth_mbit", "delay_ms")
    if not isinstance(ld, dict) or any(k not in ld for k in required):
        raise TopologyError(f"links[{i}]", ld, f"a dict with keys {', '.join(required)}")
    try:
        kind = LinkKind(ld["kind"])
    except ValueError:
        raise TopologyError(f"links[{i}].kind", ld["kind"], _kinds(LinkKind)) from None
    return LinkSpec(
        src=ld["src"],
        dst=ld["dst"],
        kind=kind,
        bandwidth_mbit=ld["bandwidth_mbit"],
        delay_ms=ld["delay_ms"],
        jitter_ms=ld.get("jitter_ms", 0.0),
        loss_pct=ld.get("loss_pct", 0.0),
    )
