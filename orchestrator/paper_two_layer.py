"""Reproduce the two-layer paper's Fig. 5a and 5b (papers/000, "Case study") with real runs.

How it works
------------
Fig. 5a (accuracy vs round): `scenarios/paper-two-layer/fig5a.yaml` (MNIST, 3 MECs x 10
devices, label flippers appearing at random, one malfunctioning MEC) is run once per
`Variant`: two-layer, blockfl, flchain and vanilla with the faults, and vanilla without
them ("ideal"); only `scheme`, `ledger.consensus` and (ideal) `faults` change. The curve is
the publisher's test accuracy of the global model per round (`metrics.csv`).

Fig. 5b (unified delay vs devices per MEC): `fig5b.yaml` is run for two-layer, blockfl and
flchain at each devices-per-MEC count. Per block, the delay from its proposal to its storage
at the last node keeping its chain, in units of t, is `node.ledger.timing.block_delays`
(a proof-of-work block's proposal: when its miner began mining it, from the miner's record).
A scheme's unified delay (our definition; the paper gives none) is the sum over its chain
kinds (``lmuc``, ``gmuc``; one kind for blockfl and flchain) of the mean block delay of that
kind: the time for a round's updates to be on record in every layer.

The paper's claims are checked against our numbers with thresholds fixed here before any
run (`claims_5a`, `claims_5b`); the paper gives no numbers, only the figure, so its column is
the claim's wording. `--quick` runs the same code path with fewer rounds and devices.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from node.ledger.timing import block_delays, block_times
from orchestrator.collect import read_records
from orchestrator.paper_runs import (
    REPO,
    RESUME_HELP,
    Outcome,
    Progress,
    ResumeError,
    check_out,
    execute,
    load_base,
    write_csv,
)

log = logging.getLogger(__name__)

SCENARIO_DIR = REPO / "scenarios" / "paper-two-layer"
LAST_ROUNDS = 3  # accuracy of a variant: the mean of its last 3 rounds
WITHIN_POINTS = 0.02  # "within a point or two of ideal vanilla"
FLAT_RATIO = 1.5  # flat: delay at the most devices / at the fewest below this
GROWTH_RATIO = 1.5  # growing: at least this


@dataclass(frozen=True)
class Variant:
    """One curve: a scheme, the consensus it needs, and whether the faults apply."""

    key: str
    label: str
    scheme: dict[str, Any]
    consensus: str
    faults: bool = True


FIG5A = (
    Variant("two-layer", "two-layer (proposed)", {"name": "two-layer"}, "pbft"),
    Variant("blockfl", "BlockFL", {"name": "blockfl"}, "single"),
    Variant("flchain", "FLchain", {"name": "flchain"}, "pbft"),
    Variant(
        "vanilla-ideal",
        "vanilla FL, ideal (no faults)",
        {"name": "vanilla"},
        "single",
        faults=False,
    ),
    Variant("vanilla-faulty", "vanilla FL, malfunctioning MECs", {"name": "vanilla"}, "single"),
)
FIG5B = FIG5A[:3]


@dataclass(frozen=True)
class Mode:
    """How big a sweep is: None keeps the scenario file's value."""

    name: str
    rounds_5a: int | None
    devices_5a: int | None
    rounds_5b: int | None
    sizes_5b: tuple[int, ...]


FULL = Mode("full", None, None, None, (5, 10, 20, 30, 50))
QUICK = Mode("quick", 4, 3, 2, (3, 5))


def variant_scenario(
    base: dict[str, Any],
    variant: Variant,
    *,
    name: str,
    rounds: int | None = None,
    devices_per_mec: int | None = None,
) -> dict[str, Any]:
    """`base` with the variant's scheme and consensus (its own parameters kept where the base
    names the same scheme), the faults dropped for a fault-free variant, and the sizes."""
    data = json.loads(json.dumps(base))  # a deep copy of plain data
    data["name"] = name
    base_scheme = base.get("scheme") or {}
    if isinstance(base_scheme, dict) and base_scheme.get("name") == variant.scheme["name"]:
        data["scheme"] = {**base_scheme, **variant.scheme}
    else:
        data["scheme"] = dict(variant.scheme)
    data["ledger"] = {**(base.get("ledger") or {}), "consensus": variant.consensus}
    if not variant.faults:
        data["faults"] = []
    if rounds is not None:
        data["training"] = {**(base.get("training") or {}), "rounds": rounds}
        data["faults"] = [f for f in data.get("faults", []) if f.get("at_round", 1) <= rounds]
    if devices_per_mec is not None:
        data["topology"] = {**(base.get("topology") or {}), "devices_per_mec": devices_per_mec}
    return data


def accuracy_by_round(run_dir: Path) -> dict[int, float]:
    """The publisher's test accuracy of the global model per round (several task shards:
    their mean)."""
    per: dict[int, list[float]] = {}
    for rec in read_records(run_dir / "nodes" / "pub"):
        if rec.get("event") == "round" and isinstance(rec.get("accuracy"), (int, float)):
            per.setdefault(int(rec["round"]), []).append(float(rec["accuracy"]))
    return {r: statistics.fmean(v) for r, v in sorted(per.items())}


def final_accuracy(curve: dict[int, float], last: int = LAST_ROUNDS) -> float | None:
    """The mean accuracy of the last `last` rounds (None without rounds)."""
    values = [curve[r] for r in sorted(curve)][-last:]
    return statistics.fmean(values) if values else None


def chain_kind(chain: str) -> str:
    """``lmuc-mec0`` -> ``lmuc``, ``gmuc-t0`` -> ``gmuc``, ``main`` -> ``main``."""
    return chain.split("-", 1)[0]


@dataclass(frozen=True)
class MeasuredDelay:
    """One block's delay in units of t, and where its proposal time came from (``header``:
    its timestamp; ``record``: the proof-of-work miner's own record)."""

    chain: str
    height: int
    keepers: int
    delay_ms: float
    delay_t: float
    proposal: str


def measured_delays(run_dir: Path, t_ms: float) -> list[MeasuredDelay]:
    """`block_delays(run_dir, t_ms)`, each with where its proposal time came from."""
    source = {(r.chain, r.height): r.proposed_from for r in block_times(run_dir)}
    return [
        MeasuredDelay(
            d.chain, d.height, d.keepers, d.delay_ms, d.delay_ms / t_ms, source[(d.chain, d.height)]
        )
        for d in block_delays(run_dir, t_ms)
    ]


def unified_delay(delays: Sequence[MeasuredDelay]) -> tuple[float | None, dict[str, float]]:
    """The sum over chain kinds of each kind's mean block delay (units of t), and the means."""
    kinds: dict[str, list[float]] = {}
    for d in delays:
        kinds.setdefault(chain_kind(d.chain), []).append(d.delay_t)
    means = {k: statistics.fmean(v) for k, v in sorted(kinds.items())}
    return (sum(means.values()) if means else None), means


def kind_medians(delays: Sequence[MeasuredDelay]) -> dict[str, float]:
    """Each chain kind's median block delay (units of t): less moved by a load spike."""
    kinds: dict[str, list[float]] = {}
    for d in delays:
        kinds.setdefault(chain_kind(d.chain), []).append(d.delay_t)
    return {k: statistics.median(v) for k, v in sorted(kinds.items())}


@dataclass(frozen=True)
class Claim:
    """A qualitative claim of the paper, our figure for it, and whether it holds."""

    figure: str
    claim: str
    paper: str
    ours: str
    passed: bool


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def claims_5a(acc: Mapping[str, float | None]) -> list[Claim]:
    """Fig. 5a's claims from each variant's final accuracy (None: the run failed)."""
    tl, ideal = acc.get("two-layer"), acc.get("vanilla-ideal")
    out = [
        Claim(
            "5a",
            f"two-layer within {WITHIN_POINTS * 100:g} points of ideal vanilla",
            "very close to the ideal case",
            f"two-layer {_fmt(tl)} vs ideal {_fmt(ideal)}",
            tl is not None and ideal is not None and abs(tl - ideal) <= WITHIN_POINTS,
        )
    ]
    for other, label in (
        ("blockfl", "BlockFL"),
        ("flchain", "FLchain"),
        ("vanilla-faulty", "vanilla with malfunctioning MECs"),
    ):
        o = acc.get(other)
        out.append(
            Claim(
                "5a",
                f"two-layer above {label} under attack",
                "higher than FLchain and BlockFL"
                if other != "vanilla-faulty"
                else "MEC malfunction prevented",
                f"two-layer {_fmt(tl)} vs {other} {_fmt(o)}",
                tl is not None and o is not None and tl > o,
            )
        )
    return out


def _ratio(series: dict[int, float]) -> float | None:
    if len(series) < 2:
        return None
    lo, hi = series[min(series)], series[max(series)]
    return hi / lo if lo > 0 else None


def claims_5b(delay: Mapping[str, dict[int, float]]) -> list[Claim]:
    """Fig. 5b's claims from each scheme's unified delay (units of t) per devices per MEC."""
    tl, bf, fc = (delay.get(k, {}) for k in ("two-layer", "blockfl", "flchain"))
    r_tl, r_bf = _ratio(tl), _ratio(bf)
    common = sorted(set(tl) & set(fc))
    small = min(set(tl) & set(bf)) if set(tl) & set(bf) else None

    def show(s: dict[int, float]) -> str:
        return ", ".join(f"{n}:{v:.1f}t" for n, v in sorted(s.items())) or "n/a"

    return [
        Claim(
            "5b",
            f"two-layer delay flat in devices per MEC (most/fewest < {FLAT_RATIO:g})",
            "not sensitive to the number of local nodes",
            f"{show(tl)} (ratio {_fmt(r_tl)})",
            r_tl is not None and r_tl < FLAT_RATIO,
        ),
        Claim(
            "5b",
            f"BlockFL delay grows with devices per MEC (most/fewest >= {GROWTH_RATIO:g})",
            "increases significantly",
            f"{show(bf)} (ratio {_fmt(r_bf)})",
            r_bf is not None and r_bf >= GROWTH_RATIO,
        ),
        Claim(
            "5b",
            "BlockFL below two-layer at the fewest devices",
            "BlockFL has an advantage when local nodes are few",
            "n/a"
            if small is None
            else f"at {small}: BlockFL {bf[small]:.1f}t, two-layer {tl[small]:.1f}t",
            small is not None and bf[small] < tl[small],
        ),
        Claim(
            "5b",
            "two-layer below FLchain at every size",
            "performs better than FLchain",
            f"FLchain {show(fc)}",
            bool(common) and all(tl[n] < fc[n] for n in common),
        ),
    ]


def plot_lines(
    series: dict[str, dict[int, float]],
    labels: dict[str, str],
    path: Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
) -> None:
    """One line per variant over integer x (rounds or devices per MEC); a variant with no
    points is left out, and the legend too when every run failed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    markers = "osD^v"
    for i, (key, points) in enumerate(series.items()):
        if points:
            ax.plot(
                list(points),
                list(points.values()),
                marker=markers[i % len(markers)],
                ms=4,
                label=labels[key],
            )
    ax.set_xticks(sorted({x for points in series.values() for x in points}))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_5a(curves: dict[str, dict[int, float]], labels: dict[str, str], path: Path) -> None:
    """Accuracy vs round, one line per variant (the paper's Fig. 5a)."""
    plot_lines(
        curves,
        labels,
        path,
        xlabel="round (episode)",
        ylabel="test accuracy",
        title="Fig. 5a: FL accuracy vs round (MNIST, 3 MECs)",
    )


def plot_5b(delay: dict[str, dict[int, float]], labels: dict[str, str], path: Path) -> None:
    """Unified delay (units of t) vs devices per MEC, one line per scheme (Fig. 5b)."""
    plot_lines(
        delay,
        labels,
        path,
        xlabel="local devices per MEC",
        ylabel="unified delay (units of t)",
        title="Fig. 5b: unified delay vs devices per MEC",
    )


def run_5a(mode: Mode, out: Path, say: Progress) -> tuple[list[Claim], list[Outcome]]:
    """Run every Fig. 5a variant; write fig5a.csv, fig5a_summary.csv and fig5a.png."""
    base = load_base(SCENARIO_DIR / "fig5a.yaml")
    curves: dict[str, dict[int, float]] = {}
    finals: dict[str, float | None] = {}
    outcomes = []
    for i, v in enumerate(FIG5A, 1):
        data = variant_scenario(
            base, v, name=f"fig5a-{v.key}", rounds=mode.rounds_5a, devices_per_mec=mode.devices_5a
        )
        say(
            f"[5a {i}/{len(FIG5A)}] {v.label}: {data['training']['rounds']} rounds, "
            f"{data['topology']['devices_per_mec']} devices per MEC"
        )
        o = execute(data, out / "fig5a", say)
        outcomes.append(o)
        curves[v.key] = accuracy_by_round(o.run_dir)
        finals[v.key] = final_accuracy(curves[v.key]) if o.ok else None
        say(
            f"[5a {i}/{len(FIG5A)}] {v.key}: {'ok' if o.ok else 'FAILED: ' + str(o.problem)}, "
            f"final accuracy {_fmt(finals[v.key])}, {o.wall_s:.0f} s (load average "
            f"{o.load_avg:.1f})"
        )
        if o.interrupted:
            break
    write_csv(
        out / "fig5a.csv",
        ["variant", "round", "accuracy"],
        [(k, r, f"{a:.4f}") for k, c in curves.items() for r, a in c.items()],
    )
    write_csv(
        out / "fig5a_summary.csv",
        [
            "variant",
            "label",
            "ok",
            "rounds",
            f"accuracy_last{LAST_ROUNDS}",
            "wall_s",
            "load_avg_1m",
            "problem",
        ],
        [
            (
                v.key,
                v.label,
                o.ok,
                o.rounds,
                _fmt(finals[v.key]),
                f"{o.wall_s:.1f}",
                f"{o.load_avg:.1f}",
                o.problem or "",
            )
            for v, o in zip(FIG5A, outcomes, strict=False)  # fewer when interrupted
        ],
    )
    plot_5a(curves, {v.key: v.label for v in FIG5A}, out / "fig5a.png")
    return claims_5a(finals), outcomes


def run_5b(mode: Mode, out: Path, say: Progress) -> tuple[list[Claim], list[Outcome]]:
    """Run every Fig. 5b scheme at every size; write fig5b.csv, fig5b_blocks.csv, fig5b.png."""
    base = load_base(SCENARIO_DIR / "fig5b.yaml")
    t_ms = float((base.get("topology") or {}).get("t_ms", 10.0))
    delay: dict[str, dict[int, float]] = {v.key: {} for v in FIG5B}
    rows: list[tuple[object, ...]] = []
    block_rows: list[tuple[object, ...]] = []
    outcomes = []
    cells = [(v, n) for v in FIG5B for n in mode.sizes_5b]
    for i, (v, n) in enumerate(cells, 1):
        data = variant_scenario(
            base, v, name=f"fig5b-{v.key}-{n}", rounds=mode.rounds_5b, devices_per_mec=n
        )
        say(f"[5b {i}/{len(cells)}] {v.label}, {n} devices per MEC")
        o = execute(data, out / "fig5b", say)
        outcomes.append(o)
        measured = measured_delays(o.run_dir, t_ms) if o.run_dir.is_dir() else []
        unified, kinds = unified_delay(measured)
        if o.ok and unified is not None:
            delay[v.key][n] = unified
        rows.append(
            (
                v.key,
                n,
                o.ok,
                len(measured),
                _fmt(unified),
                json.dumps({k: round(x, 3) for k, x in kinds.items()}),
                json.dumps({k: round(x, 3) for k, x in kind_medians(measured).items()}),
                f"{o.wall_s:.1f}",
                f"{o.load_avg:.1f}",
                o.problem or "",
            )
        )
        block_rows += [
            (
                v.key,
                n,
                d.chain,
                d.height,
                d.keepers,
                f"{d.delay_ms:.2f}",
                f"{d.delay_t:.3f}",
                d.proposal,
            )
            for d in measured
        ]
        say(
            f"[5b {i}/{len(cells)}] {v.key} n={n}: {'ok' if o.ok else 'FAILED: ' + str(o.problem)}"
            f", unified delay {_fmt(unified)} t over {len(measured)} blocks, {o.wall_s:.0f} s"
            f" (load average {o.load_avg:.1f})"
        )
        if o.interrupted:
            break
    write_csv(
        out / "fig5b.csv",
        [
            "scheme",
            "devices_per_mec",
            "ok",
            "blocks",
            "unified_delay_t",
            "mean_delay_t_by_chain_kind",
            "median_delay_t_by_chain_kind",
            "wall_s",
            "load_avg_1m",
            "problem",
        ],
        rows,
    )
    write_csv(
        out / "fig5b_blocks.csv",
        [
            "scheme",
            "devices_per_mec",
            "chain",
            "height",
            "keepers",
            "delay_ms",
            "delay_t",
            "proposal",
        ],
        block_rows,
    )
    plot_5b(delay, {v.key: v.label for v in FIG5B}, out / "fig5b.png")
    return claims_5b(delay), outcomes


def report(claims: Sequence[Claim], out: Path) -> str:
    """The claims as a table (also written to claims.md and claims.csv)."""
    lines = ["| fig | claim | paper | ours | result |", "|---|---|---|---|---|"]
    lines += [
        f"| {c.figure} | {c.claim} | {c.paper} | {c.ours} | {'PASS' if c.passed else 'FAIL'} |"
        for c in claims
    ]
    text = "\n".join(lines) + "\n"
    (out / "claims.md").write_text(text)
    write_csv(
        out / "claims.csv",
        ["figure", "claim", "paper", "ours", "result"],
        [(c.figure, c.claim, c.paper, c.ours, "PASS" if c.passed else "FAIL") for c in claims],
    )
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of scenarios/paper-two-layer/reproduce.py."""
    p = argparse.ArgumentParser(
        prog="reproduce.py",
        description="Reproduce the two-layer paper's Fig. 5a and 5b (real runs, local backend).",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK.rounds_5a} rounds and {QUICK.devices_5a} devices per MEC for "
        f"5a, sizes {list(QUICK.sizes_5b)} and {QUICK.rounds_5b} rounds for 5b",
    )
    p.add_argument("--out", type=Path, default=Path("runs/paper-two-layer"))
    p.add_argument("--figures", nargs="+", choices=("5a", "5b"), default=["5a", "5b"])
    p.add_argument("--sizes", type=int, nargs="+", help="override the 5b devices-per-MEC sizes")
    p.add_argument("--resume", action="store_true", help=RESUME_HELP)
    args = p.parse_args(argv)
    mode = QUICK if args.quick else FULL
    if args.sizes:
        mode = replace(mode, sizes_5b=tuple(args.sizes))
    why = check_out(args.out, args.resume)
    if why is not None:
        print(f"bcfl: error: {why}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    started = time.monotonic()
    claims: list[Claim] = []
    outcomes: list[Outcome] = []
    try:
        if "5a" in args.figures:
            c, o = run_5a(mode, args.out, say)
            claims += c
            outcomes += o
        if "5b" in args.figures and not any(o.interrupted for o in outcomes):
            c, o = run_5b(mode, args.out, say)
            claims += c
            outcomes += o
    except ResumeError as exc:
        print(f"bcfl: error: {exc}", file=sys.stderr)
        return 2
    text = report(claims, args.out)
    wall = time.monotonic() - started
    print(text, end="")
    print(
        f"{mode.name} mode: {len(outcomes)} runs, {sum(not o.ok for o in outcomes)} failed, "
        f"{wall:.0f} s wall; wrote {args.out}/fig5a.csv, fig5a.png, fig5b.csv, fig5b.png, "
        f"claims.md",
        flush=True,
    )
    if any(o.interrupted for o in outcomes):
        print("interrupted: the sweep stopped; the files hold the runs done", file=sys.stderr)
        return 130
    return 0 if all(o.ok for o in outcomes) else 1
