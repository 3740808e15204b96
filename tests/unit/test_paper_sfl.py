"""The SFL reproduction's pure parts: HA / MA / AA, the claims on made-up numbers, device
classes from resolved faults, the run plan and the scenario of every setting."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from orchestrator import paper_sfl as ps
from orchestrator.paper_runs import load_base
from orchestrator.paper_sfl import (
    DELTAS,
    FEDAVG,
    HONEST,
    MALICIOUS,
    QUICK,
    SFL,
    UNRELIABLE,
    DeviceReward,
    RunResult,
    Setting,
    Stats,
)
from orchestrator.scenario import parse_scenario


def _st(aa: float) -> Stats:
    return Stats(aa + 0.01, aa - 0.01, aa, 3)


def test_stats_are_highest_minimum_and_mean_of_the_present_values() -> None:
    s = ps.stats([0.9, None, 0.8, 0.7])
    assert s is not None
    assert (s.ha, s.ma, s.n) == (0.9, 0.7, 3)
    assert s.aa == pytest.approx(0.8)
    assert ps.stats([None]) is None


def test_final_accuracy_is_the_publishers_last_round() -> None:
    rows = [
        {"role": "publisher", "round": "2", "accuracy": "0.8"},
        {"role": "device", "round": "3", "accuracy": "0.99"},
        {"role": "publisher", "round": "1", "accuracy": "0.5"},
        {"role": "publisher", "round": "3", "accuracy": ""},
    ]
    assert ps.final_accuracy(rows) == 0.8
    assert ps.final_accuracy([]) is None


def test_device_classes_come_from_the_resolved_faults() -> None:
    meta = {
        "nodes": {
            "pub": "publisher",
            "mec0": "mec",
            "d1": "device",
            "d2": "device",
            "d3": "device",
        },
        "faults": [
            {"behaviour": "label_flip", "nodes": ["d1"]},
            {"behaviour": "unreliable", "nodes": ["d2", "mec0"]},
        ],
    }
    assert ps.device_classes(meta) == {"d1": MALICIOUS, "d2": UNRELIABLE, "d3": HONEST}


def test_class_rewards_total_mean_and_the_never_qualified() -> None:
    devs = [
        DeviceReward("a", HONEST, 3, 300),
        DeviceReward("b", HONEST, 1, 100),
        DeviceReward("c", MALICIOUS, 0, 0),
        DeviceReward("d", UNRELIABLE, 0, 0),
    ]
    per = ps.class_rewards(devs)
    assert (per[HONEST].total, per[HONEST].mean) == (400, 200.0)
    assert (per[MALICIOUS].unqualified, per[MALICIOUS].unqualified_paid) == (1, 0)


def _run(scheme: str, devs: list[DeviceReward]) -> RunResult:
    return RunResult(Setting("fig4", scheme, 10, 0.2, 1.5, "e^-3", 1), True, 0.9, tuple(devs))


def test_reward_claims_pass_and_fail_on_made_up_payments() -> None:
    good = _run(SFL, [DeviceReward("a", HONEST, 2, 50), DeviceReward("b", MALICIOUS, 0, 0)])
    assert [c.passed for c in ps.claims_rewards([good])] == [True, True, True]
    bad = _run(SFL, [DeviceReward("a", HONEST, 0, 5), DeviceReward("b", UNRELIABLE, 1, 7)])
    flags = [c.passed for c in ps.claims_rewards([bad])]
    assert flags == [False, False, True]
    assert "1 of 1 faulty" in ps.claims_rewards([bad])[0].why
    assert ps.claims_rewards([_run(FEDAVG, [])]) == []


def test_fig4_claims_on_made_up_numbers() -> None:
    cells = {
        (SFL, 0.05, 1.5): _st(0.95),
        (SFL, 0.2, 1.5): _st(0.94),
        (FEDAVG, 0.05, 1.5): _st(0.93),
        (FEDAVG, 0.2, 1.5): _st(0.85),
        (SFL, 0.05, 0.5): _st(0.5),  # a smaller EMD does not enter the claims
    }
    assert [c.passed for c in ps.claims_fig4(cells)] == [True, True, True]
    cells[(SFL, 0.2, 1.5)] = _st(0.80)
    flags = [c.passed for c in ps.claims_fig4(cells)]
    assert flags == [False, True, False]
    assert "spread 15.00 points" in ps.claims_fig4(cells)[0].why


def test_fig5_claims_on_made_up_numbers() -> None:
    cells = {
        (10, "e^-1"): _st(0.88),
        (10, "e^-6"): _st(0.87),
        (10, "non-DP"): _st(0.98),
        (100, "e^-1"): _st(0.91),
        (100, "e^-6"): _st(0.905),
        (100, "non-DP"): _st(0.99),
    }
    claims = ps.claims_fig5(cells, 0.9921, 0.9032, 100)
    assert [c.passed for c in claims] == [True, True, True, True]
    cells[(100, "e^-6")] = _st(0.995)  # DP above non-DP; the lowest AA now 91 %
    claims = ps.claims_fig5(cells, 0.9921, 0.9032, 100)
    assert [c.passed for c in claims] == [True, False, True, True]
    cells[(100, "e^-1")] = _st(0.80)
    claims = ps.claims_fig5(cells, 0.9921, 0.9032, 100)
    assert [c.passed for c in claims] == [True, False, False, False]


def test_threshold_claim() -> None:
    assert ps.claims_threshold(_st(0.91), 0.9032)[0].passed
    assert not ps.claims_threshold(_st(0.80), 0.9032)[0].passed
    assert not ps.claims_threshold(None, 0.9032)[0].passed
    assert ps.claims_threshold(_st(0.8), None) == []


def test_plan_threshold_first_on_seed_set_a_the_rest_on_set_b() -> None:
    settings = ps.plan(QUICK, ["4", "5"], 7, "e^-3")
    thr = [s for s in settings if s.part == "threshold"]
    rest = [s for s in settings if s.part != "threshold"]
    assert settings[: len(thr)] == thr
    assert {s.seed for s in thr} == {7, 8} and {s.seed for s in rest} == {1007, 1008}
    assert all(s.scheme == FEDAVG and (s.lam, s.emd) == (0.05, 1.5) for s in thr)
    assert len([s for s in rest if s.part == "fig4"]) == 2 * 1 * 2 * 2
    assert {s.delta for s in rest if s.part == "fig5"} == {"e^-1", "e^-6"}
    assert {s.delta for s in rest if s.part == "nondp"} == {None}
    assert len({s.name for s in settings}) == len(settings)
    assert len(ps.plan(QUICK, ["5"], 7, "e^-3")) == 2 + 3 * 2


@pytest.fixture(scope="module")
def base() -> dict[str, object]:
    return load_base(ps.SCENARIO)


def test_sfl_setting_scenario(base: dict[str, object]) -> None:
    s = Setting("fig5", SFL, 200, 0.05, 1.5, "e^-6", 1003)
    data = ps.build_scenario(base, s, threshold=0.8123456789, rounds=4, model="alexnet")
    assert data["scheme"]["name"] == SFL and data["scheme"]["threshold"] == 0.812346
    assert data["scheme"]["pretrain_samples"] == 10_000
    assert (
        data["topology"]["devices_per_mec"] == 200 and data["topology"]["d2d"] is False
    )  # YAML reads off as false
    assert data["privacy"]["delta"] == pytest.approx(math.exp(-6))
    assert data["privacy"]["divide_by_devices"] is True and data["privacy"]["epsilon"] == 8
    flip, skew = data["faults"]
    assert flip["behaviour"] == "label_flip" and flip["params"]["strength"] == 0.05
    assert skew["exclude_chosen"] is True and skew["params"]["target_emd"] == 1.5
    assert (data["seed"], data["training"]["rounds"], data["model"]) == (1003, 4, "alexnet")
    parsed = parse_scenario(data, data["name"])
    assert parsed.seed == 1003
    assert base["topology"]["devices_per_mec"] == 100  # type: ignore[index]  # not mutated


def test_baseline_and_non_dp_scenarios(base: dict[str, object]) -> None:
    s = Setting("fig4", FEDAVG, 100, 0.2, 0.5, "e^-3", 1000)
    data = ps.build_scenario(base, s, threshold=0.9)
    assert data["scheme"]["name"] == "sfl" and data["scheme"]["threshold"] == 0.0
    assert data["faults"][0]["params"]["strength"] == 0.2
    assert data["faults"][1]["params"]["target_emd"] == 0.5
    assert data["privacy"]["delta"] == pytest.approx(DELTAS["e^-3"])
    parse_scenario(data, data["name"])
    nodp = ps.build_scenario(base, Setting("nondp", FEDAVG, 10, 0.05, 1.5, None, 1000))
    assert "privacy" not in nodp
    parse_scenario(nodp, nodp["name"])


def test_quick_overrides_swap_the_dataset(base: dict[str, object]) -> None:
    s = Setting("fig5", SFL, 10, 0.05, 1.5, "e^-1", 1000)
    data = ps.build_scenario(base, s, rounds=2, overrides=QUICK.overrides)
    assert data["dataset"] == {"name": "digits"} and data["model"] == "mlp"
    assert (data["scheme"]["test_groups"], data["scheme"]["group_size"]) == (4, 90)
    assert data["training"]["batch_size"] == 16 and data["training"]["rounds"] == 2
    parse_scenario(data, data["name"])


def test_cifar10_without_files_is_a_clean_skip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = ps.main(["--dataset", "cifar10", "--dataset-root", str(tmp_path), "--out", str(out)])
    assert code == 0 and not out.exists()
    assert "skipping Figs. 4(b)/5(b)" in capsys.readouterr().out


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    assert ps.main(["--runs", "0", "--out", str(tmp_path / "x")]) == 2
    assert ps.main(["--populations", "2", "--out", str(tmp_path / "x")]) == 2
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    assert ps.main(["--out", str(tmp_path / "full")]) == 2
