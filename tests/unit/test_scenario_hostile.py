"""Hostile scenario files: every one gives `bcfl validate` exit 2 and one short error line.

A table of crafted files (PyYAML tags, huge numbers, deep nesting, complex keys, alias bombs,
control characters, files that are not text) and a seeded mutator over the shipped scenarios.
"""

from __future__ import annotations

import random
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.cli import main

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "scenarios").rglob("*.yaml"))
MAX_LINE = 300

BILLION_LAUGHS = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
    "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
    "h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n"
    "i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n"
    "name: *i\n"
)

HOSTILE: dict[str, str | bytes] = {
    "tag-int": "seed: !!int abc\n",
    "tag-float": "training: {learning_rate: !!float abc}\n",
    "tag-timestamp": "name: !!timestamp xyz\n",
    "tag-bool": "topology: {cellular: {rayleigh_fading: !!bool maybe}}\n",
    "tag-python-object": "name: !!python/object/apply:os.system ['true']\n",
    "tag-python-name": "name: !!python/name:os.system\n",
    "tag-binary": "name: !!binary '@@@'\n",
    "tag-set": "faults: !!set {a, b}\n",
    "tag-local": "name: !mine x\n",
    "int-5000-digits": "seed: " + "9" * 5000 + "\n",
    "int-negative-5000-digits": "seed: -" + "7" * 5000 + "\n",
    "int-hex-5000-digits": "seed: 0x" + "f" * 5000 + "\n",
    "int-4000-digits": "training: {rounds: " + "1" * 4000 + "}\n",
    "nesting-flow-1000": "description: " + "[" * 1000 + "]" * 1000 + "\n",
    "nesting-block-1000": "".join("  " * i + "a:\n" for i in range(1000)),
    "complex-key-list": "? [a, b]\n: 1\n",
    "complex-key-map": "training:\n  ? {rounds: 2}\n  : 3\n",
    "noise-psd-huge-negative": "topology: {cellular: {noise_psd_dbm_hz: -1.0e+300}}\n",
    "power-huge": "topology: {cellular: {bs_power_dbm: 1.0e+300}}\n",
    "billion-laughs": BILLION_LAUGHS,
    "alias-scalar": "name: &n x\ndescription: *n\n",
    "merge-key-alias": "base: &b {rounds: 2}\ntraining:\n  <<: *b\n",
    "unknown-key-newline": '"bad\\nkey": 1\n',
    "unknown-key-long": "k" * 10_000 + ": 1\n",
    "value-escape-chars": 'name: "\\e[31mred\\e[0m\\r\\n"\n',
    "value-bidi": 'name: "abc\\u202edcba"\n',
    "value-long-list": "description: [" + ", ".join(["x" * 50] * 2000) + "]\n",
    "not-utf8": b"name: caf\xe9\n",
    "nul-byte": b"name: a\x00b\n",
    "top-level-list": "- name: a\n- name: b\n",
    "top-level-int": "42\n",
    "top-level-string": "just some words\n",
    "two-documents": "name: a\n---\nname: b\n",
    "duplicate-key": "seed: 1\nseed: 2\n",
    "implicit-bad-date": "name: 2001-13-45\n",
    "implicit-bad-hex": "seed: 0x_\n",
    "nan": "topology: {t_ms: .nan}\n",
    "inf": "topology: {lan: {bandwidth_mbit: .inf}}\n",
    "float-for-int": "training: {rounds: 1.0e+400}\n",
    "bool-for-int": "seed: true\n",
    "syntax-tab": "training:\n\trounds: 3\n",
    "syntax-unclosed": "training: {rounds: 3\n",
    "too-large-topology": (
        "topology: {base_stations: 1000, mecs_per_bs: 1000, devices_per_mec: 1000}\n"
    ),
    "too-large-file": "description: '" + "x" * (1 << 20) + "'\n",
    "privacy-epsilon-1e300": "privacy: {epsilon: 1.0e+300, delta: 0.1, mechanism: analytic}\n",
    "shards-1e6": "partition: {scheme: shards, shards_per_device: 1000000}\n",
    "dataset-root-missing": "dataset: {name: mnist, root: /nonexistent}\n",
    "fault-round-huge": "faults: [{at_round: 99999999999999999999, action: crash, nodes: [x]}]\n",
    "null-key": "~: 1\n",
    "distance-huge": "topology: {cellular: {distance_max_m: 1.0e+300}}\n",
}


def _validate(path: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["validate", path])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_one_error_line(code: int, out: str, err: str) -> str:
    assert code == 2, (out, err)
    assert out == ""
    assert err.endswith("\n")
    lines = err.splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("bcfl: error: ")
    assert len(line) < MAX_LINE, line
    assert line.isprintable(), line
    return line


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_file_is_one_short_error_line(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    content = HOSTILE[name]
    path = Path("s.yaml")
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")

    line = _assert_one_error_line(*_validate("s.yaml", capsys))

    assert line.startswith("bcfl: error: s.yaml:")


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("tag-int", "tag '!!int' is invalid"),
        ("int-5000-digits", "is invalid; allowed: a valid int"),
        ("int-hex-5000-digits", "seed: an integer of about 6021 digits is invalid"),
        ("nesting-flow-1000", "nesting deeper than 32 levels is invalid"),
        ("complex-key-list", "a key that is a list or mapping is invalid"),
        ("noise-psd-huge-negative", "topology.cellular.noise_psd_dbm_hz: -1e+300 is invalid"),
        ("billion-laughs", "line 2: alias *a is invalid; allowed: no YAML aliases"),
        ("unknown-key-newline", "'bad\\nkey': unknown field"),
        ("value-escape-chars", "name: '\\x1b[31mred\\x1b[0m\\r\\n' is invalid"),
        ("value-bidi", "'abc\\u202edcba'"),
        ("implicit-bad-date", "'2001-13-45' is invalid; allowed: a valid timestamp"),
        ("privacy-epsilon-1e300", "privacy.epsilon: 1e+300 is invalid; allowed: less than or"),
    ],
)
def test_hostile_file_error_says_what(
    name: str,
    shown: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("s.yaml").write_text(str(HOSTILE[name]), encoding="utf-8")

    line = _assert_one_error_line(*_validate("s.yaml", capsys))

    assert shown in line


def test_missing_file_and_directory_are_one_line_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("d").mkdir()

    missing = _assert_one_error_line(*_validate("nope.yaml", capsys))
    directory = _assert_one_error_line(*_validate("d", capsys))

    assert missing == "bcfl: error: nope.yaml: cannot read: No such file or directory"
    assert directory == "bcfl: error: d: cannot read: Is a directory"


def test_alias_bomb_fails_fast_in_little_memory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 700  # 9**9 strings once expanded

    tracemalloc.start()
    try:
        code = main(["validate", str(path)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    err = capsys.readouterr().err
    assert code == 2
    assert "alias" in err
    assert peak < 5 * 2**20, f"peak {peak / 2**20:.1f} MiB"


# --- a seeded mutator over the shipped scenarios ------------------------------------------------

_TEXT_INSERTS = (
    "!!int ",
    "!!float ",
    "!!str ",
    "!!python/object:os.system ",
    "!!binary ",
    "!!timestamp ",
    "*a ",
    "&a ",
    "? [x] ",
    "[[[[[[[[",
    "}",
    '"\\e',
    "\x00",
    "\t",
)


def _huge(rng: random.Random) -> object:
    return rng.choice(
        [10 ** rng.randint(20, 4000), -(10 ** rng.randint(20, 300)), 1e308, -1e308, 2**64]
    )


def _retype(rng: random.Random, value: object) -> object:
    options: list[object] = [
        "x" * rng.randint(0, 200),
        [value, value],
        {"k": value},
        True,
        None,
        -1,
        0,
        0.5,
        float("nan"),
        float("inf"),
        -float("inf"),
        _huge(rng),
        "a\nb",
        "\u202e",
        [[[[[[value]]]]]],
    ]
    if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) < 1e15:
        options += [-value, value * 1000, value + 0.5, str(value)]
    return rng.choice(options)


def _paths(data: object, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(data, dict):
        for k, v in data.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += _paths(v, (*prefix, i))
    return out


def _mutate_data(rng: random.Random, data: dict[str, Any]) -> dict[str, Any]:
    paths = _paths(data)
    path = rng.choice(paths)
    parent: Any = data
    for part in path[:-1]:
        parent = parent[part]
    key = path[-1]
    op = rng.choice(("delete", "retype", "retype", "unknown", "huge"))
    if op == "delete":
        del parent[key]
    elif op == "unknown" and isinstance(parent, dict):
        parent[rng.choice(("x", "k\ny", "é" * 90, "seed ", "1"))] = parent[key]
    elif op == "huge":
        parent[key] = _huge(rng)
    else:
        parent[key] = _retype(rng, parent[key])
    return data


def _mutate_text(rng: random.Random, text: str) -> str:
    lines = text.splitlines(keepends=True) or ["\n"]
    i = rng.randrange(len(lines))
    op = rng.choice(("insert", "duplicate", "delete-char", "cut"))
    if op == "insert":
        line = lines[i]
        pos = line.find(": ") + 2 if ": " in line else rng.randrange(len(line) + 1)
        lines[i] = line[:pos] + rng.choice(_TEXT_INSERTS) + line[pos:]
    elif op == "duplicate":
        lines.insert(i, lines[i])
    elif op == "delete-char" and lines[i]:
        j = rng.randrange(len(lines[i]))
        lines[i] = lines[i][:j] + lines[i][j + 1 :]
    else:
        lines = lines[: i + 1]
    return "".join(lines)


def _mutant(rng: random.Random, source: Path) -> str:
    text = source.read_text()
    if rng.random() < 0.5:
        return _mutate_text(rng, text)
    data = yaml.safe_load(text) or {}
    for _ in range(rng.randint(1, 3)):
        if _paths(data):
            data = _mutate_data(rng, data)
    return yaml.safe_dump(data, allow_unicode=True)


def test_two_hundred_mutants_give_ok_or_one_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(11)
    monkeypatch.chdir(tmp_path)
    outcomes = {0: 0, 2: 0}
    for i in range(200):
        source = rng.choice(SHIPPED)
        path = Path(f"m{i}.yaml")
        path.write_text(_mutant(rng, source), encoding="utf-8")

        code, out, err = _validate(str(path), capsys)

        if code == 0:
            assert err == ""
            assert out.startswith(f"{path}: ok (")
        else:
            assert _assert_one_error_line(code, out, err).startswith(f"bcfl: error: {path}:")
        outcomes[code] += 1
    assert outcomes[2] > 100  # most mutants are broken; some stay valid
    assert outcomes[0] > 0
