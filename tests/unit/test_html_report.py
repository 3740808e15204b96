"""report.html: self-contained, every section, events marked, values escaped; `bcfl report`."""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from orchestrator.cli import main
from orchestrator.html_report import REPORT_HTML, report_html, topology_figure, write_report
from orchestrator.report import accuracy_figure
from orchestrator.tables import load_run
from tests.unit.test_tables import make_run

PNG = re.compile(r'<img id="([^"]+)" alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')
EVIL = "<script>alert('x')</script>"


def _images(page: str) -> dict[str, bytes]:
    return {ident: base64.b64decode(data) for ident, data in PNG.findall(page)}


def _section(page: str, ident: str) -> str:
    start = page.index(f'<section id="{ident}">')
    return page[start : page.index("</section>", start)]


def test_report_has_every_section_and_embeds_its_figures(tmp_path: Path) -> None:
    run = make_run(tmp_path, latency=True)

    path = write_report(run)

    page = path.read_text()
    assert path == run / REPORT_HTML
    for ident in ("scenario", "topology", "accuracy", "chains", "latency", "fidelity", "counters"):
        assert f'<section id="{ident}">' in page
    images = _images(page)
    assert set(images) == {"topology-figure", "accuracy", "latency-cdf", "block-propagation"}
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in images.values())
    assert "http" not in re.sub(r"base64,[^\"]+", "", page), "no external asset"
    assert "<script" not in page
    assert "name: vanilla" in _section(page, "scenario"), "the scenario as YAML"
    assert "seed: 7" in _section(page, "scenario")
    chains = _section(page, "chains")
    assert '<td class="s">main</td><td>2</td><td>2</td>' in chains  # chain, blocks, height
    latency = _section(page, "latency")
    assert "cellular" in latency and "fronthaul" in latency
    fidelity = _section(page, "fidelity")
    assert "userspace" in fidelity and "kernel(htb)" in fidelity
    counters = _section(page, "counters")
    assert "bad_signature" in counters and "link_loss" in counters


def test_fault_events_are_marked_on_the_figures_and_in_the_rounds(tmp_path: Path) -> None:
    t = load_run(make_run(tmp_path))

    page = report_html(t)
    fig = accuracy_figure(t.run_dir, t)

    rows = re.findall(r"<tr>(.*?)</tr>", _section(page, "accuracy"))
    round3 = next(r for r in rows if r.startswith("<td>3</td>"))
    assert "crash dev0-1" in round3
    ax_acc, ax_time = fig.axes[0], fig.axes[2]
    lines = [ln for ln in ax_acc.get_lines() if ln.get_gid() == "fault-event"]
    marks = [np.asarray(ln.get_xdata())[0] for ln in lines]
    assert marks == [1.5, 2.5]
    assert len([ln for ln in ax_time.get_lines() if ln.get_gid() == "fault-event"]) == 2
    labels = [tx.get_text() for tx in ax_acc.texts if tx.get_gid() == "fault-label"]
    assert labels == ["malicious dev0-0 sign_flip", "crash dev0-1"]
    plt.close(fig)


def test_an_injected_script_in_a_node_id_is_escaped(tmp_path: Path) -> None:
    devices = ("dev0-0", EVIL, "dev$\\frac{$")  # markup, and text that is bad mathtext
    events = [{"round": 2, "action": "crash", "nodes": EVIL}]
    run = make_run(tmp_path, devices=devices, events=events)
    meta = json.loads((run / "meta.json").read_text())
    meta["scenario"]["name"] = EVIL
    (run / "meta.json").write_text(json.dumps(meta))

    page = write_report(run).read_text()

    assert "<script" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in _section(page, "counters")
    assert "&lt;script&gt;" in _section(page, "accuracy"), "the event names the node"
    assert "&lt;script&gt;" in _section(page, "scenario")
    assert "topology-figure" in _images(page), "the odd ids were drawn, not a drawing error"


def test_without_latency_files_the_section_says_how_to_make_them(tmp_path: Path) -> None:
    page = write_report(make_run(tmp_path, blocks=False)).read_text()

    assert "bcfl pcap latency" in _section(page, "latency")
    assert "no blocks.csv rows" in _section(page, "chains")
    assert set(_images(page)) == {"topology-figure", "accuracy"}


def test_topology_figure_colours_links_by_class_in_layers(tmp_path: Path) -> None:
    t = load_run(make_run(tmp_path))

    fig = topology_figure(t.topology)

    assert fig is not None
    ax = fig.axes[0]
    colours = sorted(str(ln.get_color()) for ln in ax.get_lines())
    assert colours == ["tab:blue", "tab:blue", "tab:green", "tab:purple"]  # 2 cellular
    assert [tick.get_text() for tick in ax.get_yticklabels()] == [
        "device / other",
        "mec",
        "bs",
        "publisher",
    ]
    legend = ax.get_legend()
    assert legend is not None
    assert [tx.get_text() for tx in legend.get_texts()] == ["cellular", "fronthaul", "lan"]
    plt.close(fig)
    assert topology_figure({}) is None and topology_figure({"nodes": ["junk"]}) is None


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("bcfl: error:")
    return lines[0]


def test_bcfl_report_writes_report_html_and_parquet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("pyarrow")
    run = make_run(tmp_path)

    code = main(["report", str(run), "--parquet"])

    out = capsys.readouterr().out
    assert code == 0
    assert f"report: {run / REPORT_HTML}" in out
    assert '<section id="counters">' in (run / REPORT_HTML).read_text()
    for name in ("metrics", "counters", "events"):
        assert f"table: {run / name}.parquet" in out
        assert (run / f"{name}.parquet").stat().st_size > 0


def test_bcfl_report_parquet_without_pyarrow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = make_run(tmp_path)
    monkeypatch.setitem(sys.modules, "pyarrow", None)

    code = main(["report", str(run), "--parquet"])

    assert code == 2
    assert "bcfl-testbed[parquet]" in _one_error_line(capsys.readouterr().err)
    assert not (run / REPORT_HTML).exists(), "checked before any work"


@pytest.mark.parametrize("bad", ["truncated", "garbled_meta"])
def test_bcfl_report_bad_input_is_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    run = make_run(tmp_path)
    if bad == "truncated":  # events.csv is the runner's; collect does not rewrite it
        (run / "events.csv").write_text((run / "events.csv").read_text()[:-12])
        name = "events.csv"
    else:
        (run / "meta.json").write_bytes(b"\x00\xff")
        name = "meta.json"

    code = main(["report", str(run)])

    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and str(run / name) in line


def test_chains_section_draws_the_rounds_block_latency_where_metrics_have_it(
    tmp_path: Path,
) -> None:
    tables = load_run(make_run(tmp_path))
    assert "block-latency" not in _images(report_html(tables))  # no block columns: no figure
    metrics = tables.metrics
    devices = metrics["role"] == "device"
    metrics.loc[devices, "block_chain"] = "main"
    metrics.loc[devices, "block_latency_ms"] = metrics.loc[devices, "round"] * 10.0

    page = report_html(tables)

    assert "block-latency" in _images(_section(page, "chains"))
    assert _images(page)["block-latency"].startswith(b"\x89PNG\r\n\x1a\n")
