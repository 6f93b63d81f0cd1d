"""Reading YAML that someone else wrote (image specs, role files) within limits, failing in one line.

PyYAML's composer recurses once per nesting level and Python's ``int()`` refuses very long digit
strings, so without limits a hostile or broken file ends in a RecursionError or ValueError
traceback instead of an error that names the file. Every failure here is a ``YamlFileError``
(an InputError, exit 2) whose message is one line starting with the file's name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from toolkit.core.errors import InputError

MAX_BYTES = 1 << 20  # an image spec is a few KiB; a role file rarely more
MAX_DEPTH = 64  # counted in nested mappings and sequences, aliases expanded
MAX_NODES = 500_000  # values in the document with aliases expanded (no "billion laughs")
MAX_NUMBER_CHARS = 64  # longer than any 64-bit integer, far below int()'s 4300-digit limit


class YamlFileError(InputError):
    """A YAML file could not be read, decoded, parsed, or exceeded a limit."""


class _LimitError(Exception):
    def __init__(self, message: str, mark: yaml.Mark | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses to nest deeper than MAX_DEPTH before its recursion can hit Python's."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self._depth >= MAX_DEPTH:
            raise _LimitError(f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        if len(node.value) > MAX_NUMBER_CHARS:
            raise _LimitError(f"number longer than {MAX_NUMBER_CHARS} characters", node.start_mark)
        return super().construct_yaml_int(node)


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)


def _no_duplicate_keys(node: MappingNode) -> None:
    """YAML says keys are unique; PyYAML keeps the last one silently, so a typo'd copy would win unseen."""
    seen: set[str] = set()
    for key, _ in node.value:
        if not isinstance(key, ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
            continue
        if key.value in seen:
            raise _LimitError(f"duplicate key {key.value!r}", key.start_mark)
        seen.add(key.value)


def _measure(node: Node, depth: int, seen: dict[int, tuple[int, int]]) -> tuple[int, int]:
    """(values, height) of a node with aliases expanded; each distinct node is measured once."""
    if depth > MAX_DEPTH:
        raise _LimitError(f"nested deeper than {MAX_DEPTH} levels (through aliases)", node.start_mark)
    if id(node) in seen:
        count, height = seen[id(node)]
        if count < 0:
            raise _LimitError("an alias refers to the collection that contains it", node.start_mark)
        if depth + height > MAX_DEPTH:
            raise _LimitError(f"nested deeper than {MAX_DEPTH} levels (through aliases)", node.start_mark)
        return count, height
    seen[id(node)] = (-1, 0)
    count, height = 1, 0
    children: list[Node] = []
    if isinstance(node, SequenceNode):
        children = list(node.value)
    elif isinstance(node, MappingNode):
        _no_duplicate_keys(node)
        children = [n for pair in node.value for n in pair]
    for child in children:
        c, h = _measure(child, depth + 1, seen)
        count, height = count + c, max(height, h + 1)
        if count > MAX_NODES:
            raise _LimitError(f"more than {MAX_NODES} values (aliases expanded)", node.start_mark)
    seen[id(node)] = (count, height)
    return count, height


def _at(where: str, mark: yaml.Mark | None) -> str:
    return f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where


def _read_text(path: Path, where: str) -> str:
    try:
        if not path.is_file():
            raise YamlFileError(f"{where}: file not found" if not path.exists() else f"{where}: not a regular file")
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise YamlFileError(f"{where}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise YamlFileError(f"{where}: larger than {MAX_BYTES >> 20} MiB; is this the right file?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlFileError(f"{where}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None


def _parse(text: str) -> Any:
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _measure(node, 1, {})
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _yaml_problem(where: str, exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        problem = "; ".join(p for p in (exc.context, exc.problem) if p) or "syntax error"
        return f"{_at(where, exc.problem_mark)}: not valid YAML: {problem}"
    if isinstance(exc, yaml.reader.ReaderError):
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return f"{where}: not valid YAML: character #x{char:04x} is not allowed (offset {exc.position})"
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{where}: not valid YAML: {first}"


def load_yaml_file(path: Path, where: str | None = None) -> Any:
    """The data in one YAML file; ``where`` names it in errors (default: the path as given)."""
    where = where or str(path)
    text = _read_text(path, where)
    try:
        return _parse(text)
    except _LimitError as exc:
        if exc.message.startswith("nested deeper"):
            line = f" (line {exc.mark.line + 1})" if exc.mark else ""
            raise YamlFileError(f"{where}: {exc.message}{line}") from None
        raise YamlFileError(f"{_at(where, exc.mark)}: {exc.message}") from None
    except yaml.YAMLError as exc:
        raise YamlFileError(_yaml_problem(where, exc)) from None
    except RecursionError:  # a limit above was not enough; still no traceback
        raise YamlFileError(f"{where}: nested too deeply") from None
