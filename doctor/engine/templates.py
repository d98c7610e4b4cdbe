"""Message templates: literal text with `{expr}` holes, each a JMESPath expression over the same
context as the rule's conditions. Nothing else is reachable: no attribute access, no code, no
environment, no files. `{{` and `}}` are literal braces; a missing value renders as `?`.
"""

from __future__ import annotations

import json

import jmespath
import jmespath.exceptions

MAX_LIST_ITEMS = 10  # a list rendered into one line is cut here, with a count of the rest


class TemplateError(Exception):
    pass


def field_names(parsed: dict) -> set[str]:
    """Every field name a JMESPath AST touches (used to tell which facts an expression needs)."""
    names, stack = set(), [parsed]
    while stack:
        node = stack.pop()
        if node.get("type") == "field":
            names.add(node["value"])
        stack.extend(child for child in node.get("children", []) if isinstance(child, dict))
    return names


class Expression:
    """A compiled JMESPath expression. Plain dotted paths (`container.state.running`), most of
    what rules read, are walked as dict lookups: the same answer as JMESPath (null when a step is
    not an object), several times faster in the scan's hot loop."""

    __slots__ = ("compiled", "parsed", "path")

    def __init__(self, compiled):
        self.compiled = compiled
        self.parsed = compiled.parsed
        self.path = _field_chain(self.parsed)

    def search(self, context):
        if self.path is None:
            return self.compiled.search(context)
        value = context
        for key in self.path:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return value


def _field_chain(parsed: dict) -> tuple | None:
    if parsed.get("type") == "field":
        return (parsed["value"],)
    if parsed.get("type") == "subexpression":
        keys = []
        for child in parsed["children"]:
            chain = _field_chain(child)
            if chain is None:
                return None
            keys.extend(chain)
        return tuple(keys)
    return None


def search(expression: Expression, context):
    """Evaluate a compiled expression; a runtime type error (join() on a null, say) is a missing
    value, never a crash."""
    try:
        return expression.search(context)
    except jmespath.exceptions.JMESPathError:
        return None


def compile_expression(text: str) -> Expression:
    try:
        return Expression(jmespath.compile(text))
    except jmespath.exceptions.JMESPathError as exc:
        message = str(exc).splitlines()[0]
        raise TemplateError(f"invalid expression {text!r}: {message}") from None


class Template:
    """A compiled template. `parts` is a list of literal strings and compiled expressions."""

    def __init__(self, text: str):
        self.text = text
        self.parts: list = []
        self.fields: set[str] = set()
        literal, i = [], 0
        while i < len(text):
            char = text[i]
            if char == "{" and text.startswith("{{", i):
                literal.append("{")
                i += 2
            elif char == "}" and text.startswith("}}", i):
                literal.append("}")
                i += 2
            elif char == "{":
                end = _closing_brace(text, i)
                if literal:
                    self.parts.append("".join(literal))
                    literal = []
                expression = compile_expression(text[i + 1 : end].strip())
                self.fields |= field_names(expression.parsed)
                self.parts.append(expression)
                i = end + 1
            elif char == "}":
                raise TemplateError(f"unmatched '}}' at position {i} (write '}}}}' for a literal brace)")
            else:
                literal.append(char)
                i += 1
        if literal:
            self.parts.append("".join(literal))

    @property
    def single_expression(self):
        """The expression when the whole template is one `{expr}` (evidence lists expand then)."""
        if len(self.parts) == 1 and not isinstance(self.parts[0], str):
            return self.parts[0]
        return None

    def render(self, context: dict) -> str:
        return "".join(p if isinstance(p, str) else render_value(search(p, context)) for p in self.parts)

    def render_lines(self, context: dict) -> list[str]:
        """For evidence. A template that is one expression yielding a list gives a line per item;
        a line whose every expression found nothing is left out (evidence that is not there is
        not evidence), so a rule can name optional proof, such as a log line, without requiring it."""
        values = [None if isinstance(p, str) else search(p, context) for p in self.parts]
        expressions = [v for p, v in zip(self.parts, values) if not isinstance(p, str)]
        if expressions and all(v is None or v == [] or v == "" for v in expressions):
            return []
        if self.single_expression is not None and isinstance(values[0], list):
            return [render_value(v) for v in values[0] if v is not None]
        return ["".join(p if isinstance(p, str) else render_value(v) for p, v in zip(self.parts, values))]


def _closing_brace(text: str, start: int) -> int:
    """The index of the `}` closing the hole at `start`, skipping JMESPath literals and strings."""
    depth, i = 0, start
    quote = None
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\":
                i += 1
            elif char == quote:
                quote = None
        elif char in "'\"`":
            quote = char
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise TemplateError(f"unclosed '{{' at position {start} (write '{{{{' for a literal brace)")


def render_value(value) -> str:
    if value is None:
        return "?"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        shown = [render_value(v) for v in value[:MAX_LIST_ITEMS]]
        if len(value) > MAX_LIST_ITEMS:
            shown.append(f"... {len(value) - MAX_LIST_ITEMS} more")
        return ", ".join(shown) if shown else "none"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)
