"""A new rule pack to start from (`dockdoc rules new ID`): one rule with every part filled in and
commented. As generated it validates and its examples pass, so a team starts from green and
changes one thing at a time, re-running `dockdoc rules test` as it goes.
"""

from __future__ import annotations

from doctor import __version__
from doctor.engine.packs import NAME
from doctor.errors import RulePackError

_TEMPLATE = """\
# A dockdoc rule pack. The format: docs/rules.md; the facts a rule can read: docs/facts.md.
#   dockdoc rules validate {pack}.yaml   every error, with its line
#   dockdoc rules test {pack}.yaml       runs the examples below (no Docker needed)
#   dockdoc scan --rules {pack}.yaml     uses it on your containers
pack: {pack}                 # lowercase; its rules are referred to as {pack}/<id>
version: 0.1.0                # semver, as text
description: TODO say what this pack checks
requires: ">={requires}"             # the dockdoc versions this pack works with (PEP 440)
rules:
  - id: {rule_id}
    # A cause from the vocabulary (bind-loopback, port-mismatch, crash-loop, ...; see docs/rules.md)
    # or "{pack}/<name>" for a cause of this pack's own.
    cause: {pack}/{rule_id}
    # error: breaks traffic or the container now; warning: will bite; info: worth knowing.
    severity: warning
    title: TODO one line that names the problem
    # Optional: run the rule once per item of a list in the container's facts; the item is `item`
    # in conditions and templates (`each: ports` gives item.port, item.published, item.listeners).
    # each: ports
    when:                       # all / any / not around leaves {{fact, op, value}}
      all:
        - {{fact: container.state.running, op: eq, value: true}}
        # A label name with dots is quoted inside the expression, and the whole in YAML.
        - {{fact: 'container.labels."com.example.todo"', op: present}}
        # Named groups (?P<name>...) are quoted in templates as {{match.name}}; RE2 syntax.
        - {{fact: container.logs.lines, op: any-match, value: 'TODO: (?P<detail>.+)'}}
    # Optional: when this is known to hold, there is no finding (a better explanation exists).
    unless: {{fact: container.state.restarting, op: eq, value: true}}
    # Templates: {{expression}} is JMESPath over container, item, host and match; a missing value
    # prints as '?'; write {{{{ and }}}} for literal braces.
    message: >-
      {{container.display_name}}: TODO say what is wrong and what the user sees
      ({{match.detail}}).
    evidence:                   # a line whose every {{...}} finds nothing is left out
      - "log: {{match.text}}"
      - "label com.example.todo = {{container.labels.\\"com.example.todo\\"}}"
    fix: TODO say what to do about it
    # docs: https://wiki.example.com/{rule_id}
    examples:                   # fragments of facts: each `match` must fire, no `no_match` may
      match:
        - container:
            state: {{running: true, restarting: false}}
            labels: {{com.example.todo: "yes"}}
            logs: {{lines: ["starting", "TODO: replace this with the log line you look for"]}}
      no_match:
        - container:  # the label is missing
            state: {{running: true, restarting: false}}
            labels: {{}}
            logs: {{lines: ["TODO: replace this with the log line you look for"]}}
        - container:  # nothing in the log
            state: {{running: true, restarting: false}}
            labels: {{com.example.todo: "yes"}}
            logs: {{lines: ["starting"]}}
        - container:  # logs could not be read: the answer is unknown, and unknown is no finding
            state: {{running: true, restarting: false}}
            labels: {{com.example.todo: "yes"}}
            logs: null
            unknown: {{logs: "unavailable: the log driver cannot be read"}}
"""


def new_pack(rule_id: str, pack: str = "my-pack") -> str:
    """The YAML text of a one-rule pack. `rule_id` may be `<pack>/<id>`, which names the pack too."""
    if "/" in rule_id:
        pack, _, rule_id = rule_id.partition("/")
    for what, name in (("rule id", rule_id), ("pack name", pack)):
        if not NAME.match(name):
            raise RulePackError([f"{name!r} is not a valid {what}"],
                                "use lowercase letters, digits, '.', '_' and '-', starting with a letter "
                                "or digit, such as 'node-port-env'")
    major, minor = __version__.split(".")[:2]
    return _TEMPLATE.format(pack=pack, rule_id=rule_id, requires=f"{major}.{minor}")
