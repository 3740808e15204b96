"""`bcfl chain verify|show`: re-verify stored ledgers and print blocks readably.

A node keeps each of its chains in ``nodes/<id>/chains/<chain id>/ledger.sqlite``
(`node.ledger.chains`) and its blobs in ``nodes/<id>/blobs``; a node directory of the layout
before several chains (``nodes/<id>/ledger.sqlite``) is read as the node's one chain, named
``main``. A light replica's store (`node.ledger.light`: no state) is verified by its header
chain (links, certificates, Merkle roots) and named as light; whether its header chain agrees
with the chain's full replicas is checked by its head's hash against theirs at that height."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from node.core.block import Block
from node.core.encoding import EncodingError, decode_canonical
from node.ledger.blobrefs import BlobReport, check_blobs
from node.ledger.chain import CONFIG_META_KEY, ChainConfig, VerifyReport, verify_store
from node.ledger.chains import CHAIN_ID_RE, CHAINS_DIR, MAIN_CHAIN
from node.ledger.light import is_light_store, verify_light_store
from node.ledger.store import DB_NAME, ChainStore


class ChainCliError(ValueError):
    """DIR is neither a run directory nor a node directory with a ledger."""


def node_chains(node_dir: Path) -> dict[str, Path]:
    """Chain id -> directory of its ``ledger.sqlite``, for one node's directory (empty: none)."""
    chains_dir = node_dir / CHAINS_DIR
    if chains_dir.is_dir():
        found = {
            p.name: p
            for p in sorted(chains_dir.iterdir())
            if CHAIN_ID_RE.match(p.name) and (p / DB_NAME).is_file()
        }
        if found:
            return found
    if (node_dir / DB_NAME).is_file():
        return {MAIN_CHAIN: node_dir}  # the layout before several chains per node
    return {}


def ledger_dirs(path: Path) -> dict[str, Path]:
    """Node id -> node directory holding a ledger, for a run directory or one node directory."""
    if node_chains(path):
        return {path.name: path}
    nodes = path / "nodes"
    if nodes.is_dir():
        found = {p.name: p for p in sorted(nodes.iterdir()) if p.is_dir() and node_chains(p)}
        if found:
            return found
    raise ChainCliError(
        f"DIR: {str(path)!r} holds no ledger; give a run directory (with "
        f"nodes/<id>/{CHAINS_DIR}/<chain>/{DB_NAME}) or one node's directory"
    )


def _open(store_dir: Path) -> ChainStore:
    return ChainStore(store_dir / DB_NAME)


def _node_key(store: ChainStore, node: str) -> bytes | None:
    """The public key the chain's genesis gives `node`, or None (unknown or unreadable)."""
    raw = store.meta_get(CONFIG_META_KEY)
    if raw is None:
        return None
    try:
        members = ChainConfig.from_dict(decode_canonical(raw)).genesis.members
    except (EncodingError, KeyError, TypeError, ValueError):
        return None
    member = members.get(node)
    return None if member is None else member[0]


def _check_node_blobs(store: ChainStore, node_dir: Path, node: str) -> BlobReport:
    """Re-hash the blobs `node`'s chain references (see `node.ledger.blobrefs`)."""
    return check_blobs(store, node_dir / "blobs", _node_key(store, node))


def verify(path: Path) -> tuple[bool, list[str]]:
    """Verify every chain of every node under `path` and the blobs each references;
    (all ok, report lines). Per chain kept by several nodes: whether their heads agree.

    Blobs: every referenced blob present in ``nodes/<id>/blobs`` is re-hashed (corrupt: a
    failure); a blob the node signed itself (a device's updates, the publisher's global
    models) must be present (missing: a failure); others (another device's update, a
    global model whose fetch was still in flight at exit) are counted as not held.
    """
    by_chain: dict[str, dict[str, tuple[VerifyReport, BlobReport]]] = {}
    light: dict[str, set[str]] = {}  # chain id -> nodes keeping it light
    dirs: dict[tuple[str, str], Path] = {}
    for node, node_dir in ledger_dirs(path).items():
        for chain_id, store_dir in node_chains(node_dir).items():
            store = _open(store_dir)
            try:
                if is_light_store(store):
                    light.setdefault(chain_id, set()).add(node)
                    report = verify_light_store(store)
                else:
                    report = verify_store(store)
                blob_report = _check_node_blobs(store, node_dir, node)
            finally:
                store.close()
            by_chain.setdefault(chain_id, {})[node] = (report, blob_report)
            dirs[(chain_id, node)] = store_dir
    lines: list[str] = []
    ok = True
    for chain_id, nodes in sorted(by_chain.items()):
        if len(by_chain) > 1:
            lines.append(f"chain {chain_id}:")
        lights = light.get(chain_id, set())
        for node, (report, blob_report) in nodes.items():
            lines.append(_node_line(node, report, blob_report, node in lights))
            ok = ok and report.ok and blob_report.ok
        if len(nodes) > 1:
            reports = {n: r for n, (r, _) in nodes.items()}
            agree, line = _heads_line(chain_id, reports)
            lines.append(line)
            ok = ok and agree
        if lights:
            agree, line = _light_line(chain_id, nodes, lights, dirs)
            lines.append(line)
            ok = ok and agree
    return ok, lines


def _light_line(
    chain_id: str,
    nodes: dict[str, tuple[VerifyReport, BlobReport]],
    lights: set[str],
    dirs: dict[tuple[str, str], Path],
) -> tuple[bool, str]:
    """Whether each verified light replica's header chain is the full replicas' (its head is
    the highest verified full replica's block at that height, or the other way round), and
    a line saying which nodes are light."""
    names = ", ".join(sorted(lights))
    fulls = {n: r for n, (r, _) in nodes.items() if n not in lights and r.ok}
    if not fulls:
        return True, f"chain {chain_id}: light replicas: {names}; no verified full replica here"
    ref_node, ref = max(fulls.items(), key=lambda kv: kv[1].height)
    differ: list[str] = []
    for node in sorted(lights):
        report = nodes[node][0]
        if not report.ok:
            continue
        low, high = (node, ref_node) if report.height <= ref.height else (ref_node, node)
        low_report = nodes[low][0]
        store = _open(dirs[(chain_id, high)])
        try:
            same = store.stored_hash(low_report.height) == low_report.head_hash
        finally:
            store.close()
        if not same:
            differ.append(node)
    line = f"chain {chain_id}: light replicas: {names}; their header chains " + (
        f"DIFFER from the full replicas': {', '.join(differ)}"
        if differ
        else "agree with the full replicas'"
    )
    return not differ, line


def _node_line(
    node: str, report: VerifyReport, blob_report: BlobReport, light: bool = False
) -> str:
    head = report.head_hash.hex()[:16] if report.head_hash else "-"
    status = "ok" if report.ok and blob_report.ok else "FAILED"
    line = (
        f"{node:>10}: {status}  height {report.height}  head {head}  {report.tx_count} txs"
        f"  blobs {blob_report.checked} ok"
        + (f", {blob_report.not_held} not held" if blob_report.not_held else "")
        + ("  light replica (headers, certificates, Merkle roots)" if light else "")
    )
    for failure in report.failures:
        line += f"\n{'':>12}at height {failure.height}: {failure.reason}"
        line += f": {failure.detail}" if failure.detail else ""
    for key, height in blob_report.corrupt:
        line += f"\n{'':>12}at height {height}: corrupt blob {key.hex()[:16]} (hash mismatch)"
    for key, height in blob_report.missing:
        line += f"\n{'':>12}at height {height}: missing blob {key.hex()[:16]}"
    return line


def _heads_line(chain_id: str, reports: dict[str, VerifyReport]) -> tuple[bool, str]:
    """Whether the verified replicas of one chain agree at equal heights, and a line saying so."""
    heads = {r.height: r.head_hash for r in reports.values() if r.ok}
    agree = all(heads.get(r.height) == r.head_hash for r in reports.values() if r.ok)
    top = max(reports.values(), key=lambda r: r.height)
    behind = sorted(n for n, r in reports.items() if r.ok and r.height < top.height)
    line = (
        f"chain {chain_id}: {len(reports)} ledgers, {sum(r.ok for r in reports.values())} "
        f"verified; heads {'agree' if agree else 'DISAGREE'} at equal heights"
        + (f"; behind the highest ({top.height}): {', '.join(behind)}" if behind else "")
    )
    return agree, line


def _short(value: Any) -> str:
    if isinstance(value, bytes):
        return f"{value.hex()[:16]}…({len(value)} B)" if len(value) > 8 else value.hex()
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return str(value)


def show(path: Path, height: int | None = None, chain: str | None = None) -> list[str]:
    """Readable lines for every block (or the one at `height`) of one node's chain `chain`
    (None: the node's only chain)."""
    dirs = ledger_dirs(path)
    node, node_dir = next(iter(dirs.items()))
    chains = node_chains(node_dir)
    if chain is None and len(chains) > 1:
        raise ChainCliError(
            f"--chain: {node} keeps {len(chains)} chains; give one of: {', '.join(chains)}"
        )
    chain_id = chain if chain is not None else next(iter(chains))
    if chain_id not in chains:
        raise ChainCliError(
            f"--chain: {chain_id!r} is not a chain of {node}; allowed: {', '.join(chains)}"
        )
    store = _open(chains[chain_id])
    try:
        raw = store.meta_get(CONFIG_META_KEY)
        names: dict[bytes, str] = {}
        if raw is not None:
            config = ChainConfig.from_dict(decode_canonical(raw))
            names = {key: nid for nid, (key, _) in config.genesis.members.items()}
        top = store.height()
        if height is not None and not 0 <= height <= top:
            raise ChainCliError(f"--height: {height} is invalid; allowed: 0..{top}")
        heights = [height] if height is not None else list(range(top + 1))
        lines = [f"chain {chain_id} of {node} ({chains[chain_id]}), height {top}"]
        for h in heights:
            data = store.block_bytes(h)
            if data is None:
                lines.append(f"block {h}: missing")
                continue
            lines.extend(_block_lines(Block.from_bytes(data), names))
        return lines
    finally:
        store.close()


def _block_lines(block: Block, names: dict[bytes, str]) -> list[str]:
    h = block.header
    when = dt.datetime.fromtimestamp(h.timestamp_ms / 1000, dt.UTC).isoformat(
        timespec="milliseconds"
    )
    signers = ", ".join(names.get(s.signer, s.signer.hex()[:16]) for s in block.certificate)
    lines = [
        f"block {h.height}  hash {block.hash.hex()[:16]}  prev {h.prev_hash.hex()[:16]}  "
        f"time {when}  proposer {names.get(h.proposer, h.proposer.hex()[:16])}",
        f"  merkle {h.merkle_root.hex()[:16]}  state {h.state_root.hex()[:16]}  "
        f"certificate: {signers or '-'}  {len(block.txs)} txs",
    ]
    for i, tx in enumerate(block.txs):
        sender = names.get(tx.sender, tx.sender.hex()[:16])
        lines.append(
            f"  tx {i:<3} {tx.type:<20} from {sender:<8} nonce {tx.nonce:<4} {_short(tx.payload)}"
        )
    return lines
