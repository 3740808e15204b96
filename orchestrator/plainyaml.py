"""Reading a scenario file as plain YAML, refusing what makes YAML dangerous or ambiguous.

`read_plain_yaml` accepts a UTF-8 file of at most MAX_FILE_BYTES holding plain YAML: no
aliases (an alias bomb costs nothing), no explicit tags, mapping keys that are plain scalars,
each once, at most MAX_DEPTH levels of nesting. Anything else is a one-line ScenarioError
naming the file and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from orchestrator.errors import ScenarioError, escape, show

MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 32


_YAML_TAG = "tag:yaml.org,2002:"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader for plain YAML: no aliases, no explicit tags, scalar keys given once, and
    at most MAX_DEPTH levels of nesting; a value that cannot be constructed (an implicit
    ``2001-13-45``) is a ConstructorError, not a ValueError from deep inside PyYAML."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None,
                None,
                f"alias *{show(event.anchor)[1:-1]} is invalid; allowed: no YAML aliases "
                "(write the value out)",
                event.start_mark,
            )
        event = self.peek_event()
        tag = getattr(event, "tag", None)
        if tag not in (None, "!"):
            raise yaml.composer.ComposerError(
                None,
                None,
                f"tag {show(str(tag).replace(_YAML_TAG, '!!'))} is invalid; allowed: no YAML "
                "tags (write plain values, "
                "quote strings)",
                event.start_mark,
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"nesting deeper than {MAX_DEPTH} levels is invalid; allowed: at most "
                    f"{MAX_DEPTH}",
                    event.start_mark,
                )
            node: yaml.Node | None = super().compose_node(parent, index)  # type: ignore[arg-type]
            return node
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, LookupError, ArithmeticError, AttributeError):
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"{show(node.value)} is invalid; allowed: a valid "
                f"{str(node.tag).replace(_YAML_TAG, '')}, or quote it to make it a string",
                node.start_mark,
            ) from None


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen = set()
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(
                None,
                None,
                "a key that is a list or mapping is invalid; allowed: plain names as keys",
                key_node.start_mark,
            )
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"key {show(key)} is invalid; allowed: each key once per mapping (given twice)",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


def _read(path: Path) -> str:
    """The file's text; ScenarioError when it is missing, too large or not UTF-8."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror or type(exc).__name__}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ScenarioError(
            f"{path}: a file over {MAX_FILE_BYTES} bytes is invalid; allowed: a scenario file "
            f"of at most {MAX_FILE_BYTES} bytes (1 MiB)"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError(
            f"{path}: byte {exc.start} ({raw[exc.start : exc.start + 1]!r}) is invalid; "
            "allowed: UTF-8 text (not UTF-8)"
        ) from None


def read_plain_yaml(path: Path) -> Any:
    """The YAML document in `path` (None when empty); ScenarioError naming what is wrong."""
    text = _read(path)
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        char = chr(exc.character) if isinstance(exc.character, int) else exc.character
        raise ScenarioError(
            f"{path}: line {line}: character {show(char)} is invalid; "
            "allowed: printable text (not valid YAML: no control characters)"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark is not None else ""
        problem = escape(str(getattr(exc, "problem", None) or type(exc).__name__))
        if " is invalid; allowed: " in problem:  # ours, already in the one-line form
            raise ScenarioError(f"{path}:{where} {problem}") from None
        raise ScenarioError(f"{path}:{where} not valid YAML ({problem[:200]})") from None
    except RecursionError:  # kept out by MAX_DEPTH; a backstop for a deep parser path
        raise ScenarioError(
            f"{path}: nesting is invalid; allowed: at most {MAX_DEPTH} levels"
        ) from None
    return data
