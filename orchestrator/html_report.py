"""`report.html`: one self-contained page per run (no server, no external assets).

How it works: `report_html` takes a run's tables (`orchestrator.tables.load_run`) and builds
the page section by section: the scenario (meta.json's ``scenario`` as YAML), a picture of
topology.json (nodes in layers publisher / base station / MEC / device, links coloured by
class), the accuracy and round-time figure of `orchestrator.report` (fault events marked)
with the rounds joined to their events, the chain summary per chain, the latency tables and
CDFs where ``bcfl pcap latency`` wrote its files, what meta.json records about shaping and
fidelity, and the counters (drops by reason per node). Figures are PNGs embedded as base64
``data:`` URIs; tables are HTML. Every value from the run directory (user input: node ids,
task names, the scenario) goes through `html.escape`, and figures take their text literally
(`report.plain_text`), so nothing in a run can inject markup or break a drawing.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import yaml
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from orchestrator.report import accuracy_figure, plain_text
from orchestrator.summaries import (
    chain_summary,
    counters_summary,
    drops_by_reason,
    latency_blocks_summary,
    latency_by_class,
    one_way_by_route,
    rounds_with_events,
)
from orchestrator.tables import RunTables, load_run

__all__ = [
    "REPORT_HTML",
    "block_latency_figure",
    "figure_img",
    "html_table",
    "latency_cdf_figure",
    "page",
    "report_html",
    "topology_figure",
    "write_report",
]

REPORT_HTML = "report.html"
LINK_COLOURS = {
    "cellular": "tab:blue",
    "d2d": "tab:orange",
    "backhaul": "tab:red",
    "fronthaul": "tab:green",
    "lan": "tab:purple",
}
NODE_LAYERS = {"publisher": 3, "bs": 2, "mec": 1, "device": 0}
NODE_COLOURS = {"publisher": "black", "bs": "tab:gray", "mec": "tab:olive", "device": "tab:cyan"}
STYLE = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .2em .5em; text-align: right; }
th { background: #f3f3f3; } td.s { text-align: left; }
pre { background: #f7f7f7; padding: .7em; overflow-x: auto; font-size: .85em; }
img { max-width: 100%; } nav a { margin-right: 1em; } .none { color: #777; }
"""


def esc(value: object) -> str:
    """`value` as text safe inside HTML (elements and attribute values)."""
    return html.escape(str(value), quote=True)


def _fmt(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float | np.floating):
        return "" if math.isnan(value) else f"{value:.6g}"
    if value is pd.NA:
        return ""
    return str(value)


def html_table(df: pd.DataFrame, table_id: str = "") -> str:
    """`df` as an HTML table, every header and cell escaped; numbers right-aligned, floats
    to 6 significant digits, missing values empty."""
    ident = f' id="{esc(table_id)}"' if table_id else ""
    head = "".join(f"<th>{esc(c)}</th>" for c in df.columns)
    rows = []
    for record in df.itertuples(index=False, name=None):
        cells = []
        for value in record:
            numeric = isinstance(value, int | float | np.number) and not isinstance(value, bool)
            cls = "" if numeric else ' class="s"'
            cells.append(f"<td{cls}>{esc(_fmt(value))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def figure_img(fig: Figure, alt: str, img_id: str = "") -> str:
    """`fig` as an ``<img>`` with the PNG inline (a base64 data URI); closes the figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    ident = f' id="{esc(img_id)}"' if img_id else ""
    return f'<img{ident} alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def _none(text: str) -> str:
    return f'<p class="none">{esc(text)}</p>'


# ---- figures ----------------------------------------------------------------------------


def _nodes(topology: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(id, kind, parent) of every well-formed node entry of topology.json."""
    out = []
    for n in topology.get("nodes") or []:
        if isinstance(n, dict) and isinstance(n.get("id"), str):
            out.append((n["id"], str(n.get("kind", "")), str(n.get("parent") or "")))
    return out


def topology_figure(topology: dict[str, Any]) -> Figure | None:
    """topology.json drawn in layers (publisher, base stations, MEC servers, devices; a
    layer's nodes ordered by their parent), links coloured by class; None where it has no
    nodes. Labels are left out beyond 120 nodes, and turned in a layer of more than 10."""
    nodes = _nodes(topology)
    if not nodes:
        return None
    layers: dict[int, list[tuple[str, str, str]]] = {}
    for node in nodes:
        layers.setdefault(NODE_LAYERS.get(node[1], 0), []).append(node)
    pos: dict[str, tuple[float, float]] = {}
    for y, members in layers.items():
        members.sort(key=lambda n: (n[2], n[0]))
        for i, (nid, _, _) in enumerate(members):
            pos[nid] = ((i + 1) / (len(members) + 1), float(y))
    width = min(18.0, max(7.0, 0.35 * max(len(m) for m in layers.values())))
    fig, ax = plt.subplots(figsize=(width, 4.2))
    seen_classes: set[str] = set()
    drawn: set[frozenset[str]] = set()
    for link in topology.get("links") or []:
        if not isinstance(link, dict):
            continue
        a, b = str(link.get("src")), str(link.get("dst"))
        if a not in pos or b not in pos or frozenset((a, b)) in drawn:
            continue
        drawn.add(frozenset((a, b)))
        cls = str(link.get("kind", ""))
        seen_classes.add(cls)
        (xa, ya), (xb, yb) = pos[a], pos[b]
        ax.plot([xa, xb], [ya, yb], color=LINK_COLOURS.get(cls, "tab:brown"), lw=1, zorder=1)
    crowded = {y for y, members in layers.items() if len(members) > 10}
    for nid, kind, _ in nodes:
        px, py = pos[nid]
        ax.scatter([px], [py], s=60, color=NODE_COLOURS.get(kind, "white"), ec="k", zorder=2)
        if len(nodes) <= 120:  # our choice: beyond, labels are noise
            below = py in crowded  # a crowded layer: labels turned, under the nodes
            ax.annotate(
                nid,
                (px, py),
                textcoords="offset points",
                xytext=(0, -8 if below else 7),
                ha="center",
                va="top" if below else "bottom",
                rotation=90 if below else 0,
                fontsize="x-small",
            )
    handles = [
        Line2D([], [], color=LINK_COLOURS.get(c, "tab:brown"), label=c or "?")
        for c in sorted(seen_classes)
    ]
    if handles:
        ax.legend(
            handles=handles,
            title="link class",
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            fontsize="small",
        )
    ax.set_yticks(sorted(layers), [_layer_name(y) for y in sorted(layers)])
    ax.set_xticks([])
    ax.set_xlim(0, 1)
    ax.set_ylim(min(layers) - (1.0 if min(layers) in crowded else 0.5), max(layers) + 0.5)
    ax.set_title(f"topology: {len(nodes)} nodes, {len(drawn)} links")
    fig.tight_layout()
    return fig


def _layer_name(y: int) -> str:
    for name, layer in NODE_LAYERS.items():
        if layer == y:
            return "device / other" if name == "device" else name
    return str(y)


def _cdf(ax: Any, values: pd.Series, label: str, **style: Any) -> Any:
    xs = np.sort(values.dropna().to_numpy(dtype=float))
    if len(xs) == 0:
        return None
    ys = np.arange(1, len(xs) + 1) / len(xs)
    return ax.step(xs, ys, where="post", label=label, **style)[0]


def _labelled(fig: Figure, ax: Any, xlabel: str, ylabel: str, title: str) -> Figure:
    """`fig` with its axes labelled and titled, a light grid and a small legend."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def latency_cdf_figure(latency: pd.DataFrame) -> Figure | None:
    """The CDF of each route class's one-way delay (``one_way_ms``, against the route's
    configured delay, dashed), or, for a latency.csv without it, of each link class's
    propagation between capture points; None where latency.csv has neither."""
    if {"one_way_ms", "route_class", "route_delay_ms"} <= set(latency) and (
        latency["one_way_ms"].notna().any()
    ):
        measure, by, configured_by = "one_way_ms", "route_class", "route_delay_ms"
    elif "propagation_ms" in latency and latency["propagation_ms"].notna().any():
        measure, by, configured_by = "propagation_ms", "link_class", "configured_delay_ms"
    else:
        return None
    df = latency[latency[measure].notna()]
    df = df.assign(**{by: df[by].replace("", "all")})
    fig, ax = plt.subplots(figsize=(7, 4))
    for cls, g in df.groupby(by, sort=True):
        line = _cdf(ax, g[measure], f"{cls} (n={len(g)})")
        configured = g[configured_by].dropna()
        if line is not None and len(configured):
            ax.axvline(float(configured.median()), color=line.get_color(), ls="--", lw=1)
    return _labelled(
        fig,
        ax,
        f"{measure.removesuffix('_ms')} (ms); dashed: configured delay",
        "fraction of messages",
        f"latency per {by.replace('_', ' ')}",
    )


def block_propagation_figure(latency_blocks: pd.DataFrame) -> Figure | None:
    """Per chain, the CDF over (block, node) of the time from the proposal to the block's
    arrival and to its storage at the node; None where there is nothing to draw."""
    if latency_blocks.empty:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    drew = False
    for chain, g in latency_blocks.groupby("chain", sort=True):
        for stage, ls in (("arrived", "-"), ("stored", ":")):
            line = _cdf(ax, g[f"{stage}_ms"] - g["proposed_ms"], f"{chain}: {stage}", ls=ls)
            drew = drew or line is not None
    if not drew:
        plt.close(fig)
        return None
    return _labelled(
        fig, ax, "ms since the block's proposal", "fraction of (block, node)", "block propagation"
    )


def block_latency_figure(metrics: pd.DataFrame) -> Figure | None:
    """Per task chain and round, the median over nodes of ``block_latency_ms`` (metrics.csv:
    the round's block, from its proposal to its storage at the node) with a band up to the
    95th percentile; None where no row has one."""
    rows = metrics[metrics["block_latency_ms"].notna() & (metrics["block_chain"] != "")]
    if rows.empty:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for chain, g in rows.groupby("block_chain", sort=True):
        per_round = g.groupby("round")["block_latency_ms"]
        median, p95 = per_round.median(), per_round.quantile(0.95)
        (line,) = ax.plot(median.index, median.to_numpy(), marker="o", ms=3, label=str(chain))
        ax.fill_between(
            p95.index, median.to_numpy(), p95.to_numpy(), color=line.get_color(), alpha=0.2
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _labelled(
        fig,
        ax,
        "round",
        "ms, proposal to storage",
        "the round's block: median over nodes (band: to the 95th percentile)",
    )


# ---- sections ---------------------------------------------------------------------------


def _section(ident: str, title: str, body: Iterable[str]) -> str:
    return f'<section id="{ident}"><h2>{esc(title)}</h2>\n' + "\n".join(body) + "\n</section>"


def _scenario(t: RunTables) -> list[str]:
    scenario = t.meta.get("scenario")
    if scenario is None:
        return [_none("meta.json records no scenario")]
    text = yaml.safe_dump(scenario, sort_keys=False, allow_unicode=True, default_flow_style=False)
    facts = {k: t.meta.get(k, "") for k in ("run_id", "scheme", "backend", "seed")}
    facts |= {
        k: t.meta[k] for k in ("rounds_completed", "final_accuracy", "elapsed_s") if k in t.meta
    }
    table = pd.DataFrame({"field": list(facts), "value": [_fmt(v) for v in facts.values()]})
    return [html_table(table, "run-facts"), f"<pre>{esc(text)}</pre>"]


def _topology(t: RunTables) -> list[str]:
    fig = topology_figure(t.topology)
    if fig is None:
        return [_none("no topology.json (or it lists no nodes)")]
    return [figure_img(fig, "topology", "topology-figure")]


def _accuracy(t: RunTables) -> list[str]:
    rounds = rounds_with_events(t.metrics, t.events)
    if rounds.empty:
        return [_none("no round of the global model recorded in metrics.csv")]
    out = [figure_img(accuracy_figure(t.run_dir, t), "accuracy and round time", "accuracy")]
    columns = ["round", "task_chain", "accuracy", "loss", "contributors", "round_time_s"]
    columns += ["missing", "events"]
    shown = rounds[columns]
    if (shown["task_chain"] == "").all():
        shown = shown.drop(columns="task_chain")
    out.append(html_table(shown, "rounds"))
    if len(t.events):
        out.append("<h3>fault events (events.csv)</h3>")
        out.append(html_table(t.events, "events"))
    return out


def _chains(t: RunTables) -> list[str]:
    summary = chain_summary(t.blocks)
    if summary.empty:
        return [_none("no blocks.csv rows")]
    out = ["<p>delay: proposal to storage at the last node keeping the chain (ms)</p>"]
    out.append(html_table(summary, "chain-summary"))
    fig = block_latency_figure(t.metrics)
    if fig is not None:
        out.append(figure_img(fig, "block latency per round", "block-latency"))
    return out


def _latency(t: RunTables) -> list[str]:
    if t.latency.empty and t.latency_blocks.empty:
        return [_none("no latency.csv (run `bcfl pcap latency RUN_DIR` on a captured run)")]
    out = []
    if len(t.latency):
        one_way = one_way_by_route(t.latency)
        if len(one_way):
            out += [
                "<h3>one-way delay per route class (latency.csv)</h3>",
                "<p>the sender's send record to the first byte at the receiver, against the "
                "route's summed configured delay</p>",
                html_table(one_way, "latency-one-way"),
            ]
        out += ["<h3>per hop, by link class (latency.csv)</h3>"]
        out.append(html_table(latency_by_class(t.latency), "latency-hops"))
        fig = latency_cdf_figure(t.latency)
        if fig is not None:
            out.append(figure_img(fig, "latency CDF", "latency-cdf"))
    if len(t.latency_blocks):
        out += ["<h3>per chain (latency_blocks.csv)</h3>"]
        out.append(html_table(latency_blocks_summary(t.latency_blocks), "latency-blocks"))
        fig = block_propagation_figure(t.latency_blocks)
        if fig is not None:
            out.append(figure_img(fig, "block propagation", "block-propagation"))
    return out


FIDELITY_KEYS = ("shaping", "bandwidth", "delay", "jitter", "loss", "switch", "note")


def _fidelity(t: RunTables) -> list[str]:
    m = t.meta
    facts = {k: m[k] for k in FIDELITY_KEYS if k in m}
    probe = m.get("netem_probe")
    if isinstance(probe, dict):
        facts["netem available"] = probe.get("available", "")
        if probe.get("reason"):
            facts["netem probe"] = probe["reason"]
    out = []
    if facts:
        table = pd.DataFrame({"aspect": list(facts), "how": [_fmt(v) for v in facts.values()]})
        out.append(html_table(table, "shaping"))
    per_class = m.get("by_link_class")
    if isinstance(per_class, dict) and per_class:
        rows = [
            {"link_class": cls, **{k: _fmt(v) for k, v in aspects.items()}}
            for cls, aspects in per_class.items()
            if isinstance(aspects, dict)
        ]
        out += ["<h3>shaping per link class</h3>", html_table(pd.DataFrame(rows), "by-class")]
    if "fidelity" in m:
        out += ["<h3>fidelity (meta.json)</h3>"]
        out.append(f"<pre>{esc(json.dumps(m['fidelity'], indent=1, default=str))}</pre>")
    return out or [_none("meta.json records nothing about shaping or fidelity")]


def _counters(t: RunTables) -> list[str]:
    if t.counters.empty:
        return [_none("no counters.csv rows")]
    out = [html_table(counters_summary(t.counters), "counters")]
    drops = drops_by_reason(t.counters)
    if drops.empty:
        return [*out, _none("no message dropped")]
    wide = drops.pivot_table(
        index=["node", "role"], columns="reason", values="count", aggfunc="sum", fill_value=0
    ).reset_index()
    wide.columns.name = None
    return [*out, "<h3>drops by reason per node</h3>", html_table(wide, "drops")]


SECTIONS = (
    ("scenario", "Scenario", _scenario),
    ("topology", "Topology", _topology),
    ("accuracy", "Accuracy and round time", _accuracy),
    ("chains", "Chains", _chains),
    ("latency", "Latency", _latency),
    ("fidelity", "Fidelity", _fidelity),
    ("counters", "Counters", _counters),
)


def page(title: str, sections: Iterable[tuple[str, str, str]]) -> str:
    """A whole HTML page: `title` (escaped here) and (id, heading, body HTML) sections with a
    navigation bar; the bodies must be escaped already."""
    parts = list(sections)
    nav = " ".join(f'<a href="#{ident}">{esc(head)}</a>' for ident, head, _ in parts)
    body = "\n".join(_section(ident, head, [html_body]) for ident, head, html_body in parts)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f"<title>{esc(title)}</title>\n<style>{STYLE}</style></head>\n"
        f"<body>\n<h1>{esc(title)}</h1>\n<nav>{nav}</nav>\n{body}\n</body></html>\n"
    )


def report_html(tables: RunTables) -> str:
    """The report page of one run (see the module docstring)."""
    name = tables.meta.get("run_id") or tables.run_dir.name
    with plain_text():
        sections = [(ident, head, "\n".join(make(tables))) for ident, head, make in SECTIONS]
    return page(f"bcfl report: {name}", sections)


def write_report(run_dir: Path, tables: RunTables | None = None) -> Path:
    """Write ``run_dir/report.html`` (`report_html`); returns its path. `tables`: the run's
    tables where the caller loaded them (else `load_run`; `TableError` on bad input)."""
    tables = load_run(run_dir) if tables is None else tables
    path = Path(run_dir) / REPORT_HTML
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(report_html(tables), encoding="utf-8")
    tmp.replace(path)
    return path
