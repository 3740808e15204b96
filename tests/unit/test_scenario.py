"""Unit tests for orchestrator.scenario: the YAML schema and its one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.scenario import Scenario, ScenarioError, load_scenario, parse_scenario
from topologies import build_hierarchy

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "scenarios" / "quickstart.yaml"


def _error(data: object) -> str:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(data, "s.yaml")
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("s.yaml: ")
    return msg


def _write(tmp_path: Path, text: str | bytes, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def _load_error(path: Path) -> str:
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(str(path))
    return msg


def test_quickstart_loads_with_its_values() -> None:
    s = load_scenario(QUICKSTART)

    assert s.name == "quickstart"
    assert (s.seed, s.scheme.name, s.backend, s.shaping) == (1, "vanilla", "local", "userspace")
    assert (s.dataset.name, s.model, s.partition.scheme) == ("digits", "mlp", "iid")
    assert (s.training.rounds, s.training.local_epochs, s.training.batch_size) == (20, 2, 16)
    assert s.training.learning_rate == 0.1
    assert s.training.round_deadline_s == 30.0
    assert (s.topology.base_stations, s.topology.mecs_per_bs, s.topology.devices_per_mec) == (
        1,
        2,
        5,
    )


def test_quickstart_topology_builds() -> None:
    s = load_scenario(QUICKSTART)

    spec = build_hierarchy(s.topology.to_params(), s.seed)

    assert len(spec.daemons()) == 2 + 2 * 5 + 1  # MECs, devices, publisher


def test_empty_mapping_gets_every_default() -> None:
    s = parse_scenario({})

    assert s == Scenario()
    assert (s.name, s.seed, s.scheme.name, s.model) == ("scenario", 0, "vanilla", "mlp")
    assert s.training.rounds == 10
    assert s.dataset.name == "digits"
    assert s.topology.backhaul.mean_t == 2.0
    assert s.topology.cellular.distance_max_m == 250.0
    assert s.max_message_mb == 64.0


def test_partial_section_keeps_the_other_defaults() -> None:
    s = parse_scenario({"training": {"rounds": 3}, "topology": {"cellular": {"delay_ms": 7}}})

    assert s.training.rounds == 3
    assert s.training.batch_size == 32
    assert s.topology.cellular.delay_ms == 7.0
    assert s.topology.cellular.bandwidth_mhz == 20.0
    assert s.topology.devices_per_mec == 5


def test_scenario_is_frozen() -> None:
    s = parse_scenario({})

    with pytest.raises(ValueError, match="frozen"):
        s.seed = 5


def test_unknown_top_level_field_lists_the_allowed_fields() -> None:
    msg = _error({"nmae": "x"})

    assert "nmae: unknown field" in msg
    for allowed in ("name", "seed", "scheme", "dataset", "training", "topology"):
        assert allowed in msg.split("allowed:")[1]


def test_unknown_nested_field_names_its_path_and_siblings() -> None:
    msg = _error({"training": {"epochz": 3}})

    assert "training.epochz: unknown field" in msg
    assert "local_epochs" in msg
    assert "rounds" in msg


def test_deep_unknown_field() -> None:
    msg = _error({"topology": {"cellular": {"fading": True}}})

    assert "topology.cellular.fading: unknown field" in msg
    assert "rayleigh_fading" in msg


@pytest.mark.parametrize(
    ("data", "path", "shown"),
    [
        pytest.param({"training": {"rounds": 0}}, "training.rounds", "0", id="rounds-zero"),
        pytest.param({"training": {"rounds": "ten"}}, "training.rounds", "'ten'", id="rounds-str"),
        pytest.param({"training": {"rounds": 2.5}}, "training.rounds", "2.5", id="rounds-frac"),
        pytest.param({"scheme": "bees-x"}, "scheme.name", "'bees-x'", id="scheme"),
        pytest.param({"scheme": {"name": "x"}}, "scheme.name", "'x'", id="scheme-name"),
        pytest.param({"dataset": {"name": "cifar"}}, "dataset.name", "'cifar'", id="dataset"),
        pytest.param({"model": "resnet"}, "model", "'resnet'", id="model"),
        pytest.param({"seed": -1}, "seed", "-1", id="seed-negative"),
        pytest.param({"seed": 2**32}, "seed", str(2**32), id="seed-too-big"),
        pytest.param({"name": "has space"}, "name", "'has space'", id="name"),
        pytest.param(
            {"training": {"momentum": 1.0}}, "training.momentum", "1.0", id="momentum-one"
        ),
        pytest.param(
            {"topology": {"d2d": {"mean_t": 1, "sd_t": 1, "bandwidth_mbit": 0}}},
            "topology.d2d.bandwidth_mbit",
            "0",
            id="bandwidth-zero",
        ),
        pytest.param({"topology": {"t_ms": float("inf")}}, "topology.t_ms", "inf", id="t-infinite"),
    ],
)
def test_invalid_value_names_the_field_and_the_value(
    data: dict[str, Any], path: str, shown: str
) -> None:
    msg = _error(data)

    assert msg.startswith(f"s.yaml: {path}: {shown} is invalid; allowed: ")


def test_scheme_error_shows_the_allowed_literal() -> None:
    msg = _error({"scheme": "bees-x"})

    assert msg.endswith(
        "allowed: 'vanilla', 'gossip-fedavg', 'blockfl', 'two-layer', 'flchain', 'bees', 'b-ei' "
        "or 'sfl'"
    )


def test_scheme_params_are_validated_by_the_scheme() -> None:
    msg = _error({"scheme": {"name": "vanilla", "rounds": 3}})

    assert msg == "s.yaml: scheme: rounds: unknown field; allowed: name"


def test_scheme_shorthand_and_mapping_are_the_same() -> None:
    short = parse_scenario({"scheme": "vanilla"})
    full = parse_scenario({"scheme": {"name": "vanilla"}})

    assert short == full and short.scheme.name == "vanilla" and short.scheme.params == {}


def test_dataset_error_shows_every_allowed_name() -> None:
    msg = _error({"dataset": {"name": "cifar"}})

    for name in ("'digits'", "'fashion-mnist'", "'mnist'", "'mnist-5k'"):
        assert name in msg


def test_distance_max_below_min_is_rejected() -> None:
    msg = _error({"topology": {"cellular": {"distance_min_m": 200, "distance_max_m": 150}}})

    assert msg.startswith("s.yaml: topology.cellular: ")
    assert "distance_max_m must be >= distance_min_m" in msg


def test_backhaul_loss_of_100_pct_is_rejected() -> None:
    backhaul = {"mean_t": 2, "sd_t": 1, "bandwidth_mbit": 1000, "loss_pct": 100}

    msg = _error({"topology": {"backhaul": backhaul}})

    assert msg.startswith("s.yaml: topology.backhaul.loss_pct: 100 is invalid; allowed: ")
    assert "less than 100" in msg


def test_missing_required_field_in_an_explicit_section() -> None:
    msg = _error({"topology": {"backhaul": {"loss_pct": 1}}})

    assert "topology.backhaul.mean_t: required field is missing" in msg
    assert "more)" in msg  # sd_t and bandwidth_mbit are missing too


def test_string_value_with_a_newline_stays_on_one_line() -> None:
    _error({"name": "two\nlines"})


@pytest.mark.parametrize("data", [[1, 2], "text", None, 3])
def test_document_that_is_not_a_mapping(data: object) -> None:
    msg = _error(data)

    assert f"the file must hold a mapping of fields, got {type(data).__name__}" in msg


# --- load_scenario -------------------------------------------------------------------------


def test_load_reads_yaml_from_a_file(tmp_path: Path) -> None:
    path = _write(tmp_path, yaml.safe_dump({"name": "mine", "training": {"rounds": 4}}))

    s = load_scenario(path)

    assert (s.name, s.training.rounds) == ("mine", 4)


def test_load_error_names_the_file_and_the_field(tmp_path: Path) -> None:
    path = _write(tmp_path, "training:\n  rounds: 0\n")

    msg = _load_error(path)

    assert msg == f"{path}: training.rounds: 0 is invalid; allowed: greater than or equal to 1"


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: ok\ntraining:\n  rounds: 3\n  batch_size: [1, 2\nmodel: mlp\n")

    msg = _load_error(path)

    assert "not valid YAML" in msg
    assert "line 5" in msg


def test_file_holding_a_list(tmp_path: Path) -> None:
    path = _write(tmp_path, "- name: a\n- name: b\n")

    msg = _load_error(path)

    assert msg.endswith("the file must hold a mapping of fields, got list")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"

    msg = _load_error(path)

    assert "cannot read" in msg
    assert "No such file" in msg


def test_directory_instead_of_a_file(tmp_path: Path) -> None:
    msg = _load_error(tmp_path)

    assert "cannot read" in msg


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = _write(tmp_path, b"name: \xff\xfe\n")

    _load_error(path)


def test_yaml_reader_error_has_no_empty_location(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: bell\x07\n")

    msg = _load_error(path)

    assert "not valid YAML" in msg
    assert "::" not in msg
