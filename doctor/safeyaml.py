"""Loading untrusted YAML (rule packs, config): safe, bounded, and with line numbers.

PyYAML's composer builds a node graph without running any constructor, and an alias is a
reference to an existing node, so composing is linear in the document. We then build plain
data ourselves with a budget on nodes visited: a "billion laughs" document (aliases of aliases)
runs out of budget in microseconds instead of expanding. Only the standard YAML tags are accepted;
`!!python/...` and any custom tag are errors, so nothing is ever executed or read.
"""

from __future__ import annotations

import datetime as _dt

import yaml

MAX_BYTES = 1 << 20  # 1 MiB: far above any real pack
MAX_NODES = 200_000  # nodes visited while building data, aliases counted each time they are used
MAX_DEPTH = 64

_SCALAR_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:timestamp",
}
# libyaml's C parser when PyYAML has it (10x faster at composing; the same safe node graph).
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"


class YamlError(Exception):
    """Carries `line` (1-based, or None) and a message without the file name."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line


class Document:
    """Plain data plus the line where each value starts, keyed by its path (a tuple of keys/indices)."""

    def __init__(self, data, lines: dict):
        self.data = data
        self.lines = lines

    def line(self, path: tuple) -> int | None:
        """The line of the value at `path`, or of its nearest ancestor that has one."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())


def load(text: str | bytes) -> Document:
    if isinstance(text, bytes):
        if len(text) > MAX_BYTES:
            raise YamlError(f"file larger than {MAX_BYTES} bytes")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise YamlError("not UTF-8 text") from None
    if len(text) > MAX_BYTES:
        raise YamlError(f"file larger than {MAX_BYTES} bytes")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        if "nesting depth" in str(exc.problem):  # libyaml >= 0.2.5 stops very deep documents itself
            raise YamlError(f"nested deeper than {MAX_DEPTH} levels") from None
        mark = exc.problem_mark or exc.context_mark
        # libyaml puts an error at the end of input one line past the last: name a real line.
        line = min(mark.line + 1, text.count("\n") + 1) if mark else None
        raise YamlError(f"not valid YAML: {exc.problem or exc.context}", line) from None
    except yaml.YAMLError as exc:
        raise YamlError(f"not valid YAML: {exc}") from None
    except RecursionError:
        raise YamlError(f"nested deeper than {MAX_DEPTH} levels") from None
    if node is None:
        return Document(None, {})
    builder = _Builder(loader)
    try:
        data = builder.build(node, (), 0)
    finally:
        loader.dispose()
    return Document(data, builder.lines)


class _Builder:
    def __init__(self, loader):
        self.loader = loader
        self.lines: dict[tuple, int] = {}
        self.budget = MAX_NODES

    def build(self, node, path: tuple, depth: int):
        self.budget -= 1
        line = node.start_mark.line + 1
        if self.budget < 0:
            raise YamlError(f"document too large once aliases are expanded (over {MAX_NODES} values)", line)
        if depth > MAX_DEPTH:
            raise YamlError(f"nested deeper than {MAX_DEPTH} levels", line)
        self.lines.setdefault(path, line)
        if isinstance(node, yaml.ScalarNode):
            if node.tag not in _SCALAR_TAGS:
                raise YamlError(f"tag {node.tag!r} is not allowed (only plain YAML values)", line)
            value = self.loader.construct_object(node)
            # Dates stay dates (config `until:`); datetimes become text like any other value.
            if isinstance(value, _dt.datetime):
                value = value.isoformat()
            return value
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ:
                raise YamlError(f"tag {node.tag!r} is not allowed (only plain YAML values)", line)
            return [self.build(child, path + (i,), depth + 1) for i, child in enumerate(node.value)]
        if node.tag != _MAP:
            raise YamlError(f"tag {node.tag!r} is not allowed (only plain YAML values)", line)
        result = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in _SCALAR_TAGS:
                raise YamlError("mapping keys must be plain strings", key_node.start_mark.line + 1)
            key = self.loader.construct_object(key_node)
            if not isinstance(key, str):
                key = str(key)
            if key in result:
                raise YamlError(f"duplicate key {key!r}", key_node.start_mark.line + 1)
            self.lines[path + (key,)] = key_node.start_mark.line + 1
            result[key] = self.build(value_node, path + (key,), depth + 1)
        return result
