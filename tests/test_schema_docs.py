"""The pack format's contract: the JSON Schema, the scaffold and docs/rules.md agree with the loader."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest

from doctor import safeyaml
from doctor.engine import conditions, examples, packs, schema, scaffold
from doctor.engine.causes import CAUSES
from doctor.errors import RulePackError

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "rules.md"
FACTS_DOCS = ROOT / "docs" / "facts.md"
PACK_FILES = sorted((ROOT / "rules").glob("*.yaml")) + [
    ROOT / "tests" / "data" / "packs" / "acme-web.yaml",
    ROOT / "tests" / "data" / "entrypoint_pack" / "acme_dockdoc_rules" / "acme.yaml",
]


def _validator():
    return jsonschema.Draft202012Validator(schema.PACK_SCHEMA)


def _data(path: Path):
    return safeyaml.load(path.read_bytes()).data


def _errors(data) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in _validator().iter_errors(data)]


def test_schema_is_a_valid_draft_2020_12_schema():
    jsonschema.Draft202012Validator.check_schema(schema.PACK_SCHEMA)
    assert schema.PACK_SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert json.loads(schema.render()) == schema.PACK_SCHEMA


def test_schema_names_every_operator_cause_severity_and_key():
    leaf = schema.PACK_SCHEMA["$defs"]["leaf"]
    assert leaf["properties"]["op"]["enum"] == list(conditions.OPERATORS)
    # every operator has a value rule of its own (not the permissive fallback)
    for name, (check, _test) in conditions.OPERATORS.items():
        assert check in schema._VALUE_BY_CHECK, name
    cause = schema.PACK_SCHEMA["$defs"]["cause"]["anyOf"]
    assert set(cause[0]["enum"]) == set(CAUSES)
    assert schema.PACK_SCHEMA["$defs"]["rule"]["properties"]["severity"]["enum"] == list(packs.SEVERITIES)
    assert set(schema.PACK_SCHEMA["properties"]) == packs.PACK_KEYS
    assert set(schema.PACK_SCHEMA["$defs"]["rule"]["properties"]) == packs.RULE_KEYS
    assert set(schema.PACK_SCHEMA["$defs"]["rule"]["required"]) == set(packs.REQUIRED_RULE_KEYS)


@pytest.mark.parametrize("path", PACK_FILES, ids=lambda p: p.name)
def test_every_shipped_and_example_pack_validates_against_the_schema(path):
    assert _errors(_data(path)) == []
    pack, problems = packs.load_path(str(path))
    assert problems == [] and pack


def _good() -> dict:
    return _data(ROOT / "tests" / "data" / "packs" / "acme-web.yaml")


def _break(mutate):
    data = copy.deepcopy(_good())
    mutate(data)
    return data


BROKEN = {
    "unknown top-level key": lambda d: d.update(colour="blue"),
    "pack name with capitals": lambda d: d.update(pack="Acme"),
    "version as a number": lambda d: d.update(version=1.2),
    "no rules": lambda d: d.update(rules=[]),
    "unknown rule key": lambda d: d["rules"][0].update(severty="error"),
    "missing message": lambda d: d["rules"][0].pop("message"),
    "unknown cause": lambda d: d["rules"][0].update(cause="bind-loopbak"),
    "bad severity": lambda d: d["rules"][0].update(severity="fatal"),
    "unknown operator": lambda d: d["rules"][0]["when"]["all"].__setitem__(
        0, {"fact": "item.published", "op": "equal", "value": 1}),
    "eq without a value": lambda d: d["rules"][0]["when"]["all"].__setitem__(
        0, {"fact": "container.name", "op": "eq"}),
    "present with a value": lambda d: d["rules"][0]["when"]["all"].__setitem__(
        0, {"fact": "container.name", "op": "present", "value": "x"}),
    "in with a scalar": lambda d: d["rules"][0]["when"]["all"].__setitem__(
        0, {"fact": "container.name", "op": "in", "value": "x"}),
    "gt with a boolean": lambda d: d["rules"][0]["when"]["all"].__setitem__(
        0, {"fact": "container.restart.count", "op": "gt", "value": True}),
    "regex too long": lambda d: d["rules"][0]["when"]["all"].__setitem__(
        0, {"fact": "container.name", "op": "regex", "value": "a" * (conditions.MAX_PATTERN + 1)}),
    "group with a second key": lambda d: d["rules"][0].update(
        when={"all": [{"fact": "container.name", "op": "present"}], "fact": "x"}),
    "empty any": lambda d: d["rules"][0].update(when={"any": []}),
    "docs not a URL": lambda d: d["rules"][0].update(docs="wiki page"),
    "example without container": lambda d: d["rules"][0]["examples"]["match"].__setitem__(0, {"ports": []}),
    "examples with a third list": lambda d: d["rules"][0]["examples"].update(maybe=[]),
}


@pytest.mark.parametrize("name", BROKEN)
def test_a_broken_pack_fails_the_schema_and_the_loader(name):
    data = _break(BROKEN[name])
    assert _errors(data), f"schema accepted: {name}"
    doc = safeyaml.Document(data, {})
    pack, problems = packs.parse_pack(doc, "broken.yaml")
    assert pack is None and problems, f"loader accepted: {name}"


def test_a_cause_of_the_packs_own_passes_the_schema():
    data = _break(lambda d: d["rules"][0].update(cause="acme-web/node-port"))
    assert _errors(data) == []


# ---- scaffold ---------------------------------------------------------------------------------

@pytest.mark.parametrize("rule_id,pack_name", [("node-port-env", "acme-web"), ("x", "my-pack"),
                                               ("acme-web/tenant.header_1", "ignored")])
def test_scaffold_validates_and_its_examples_pass(rule_id, pack_name):
    text = scaffold.new_pack(rule_id, pack_name)
    pack, problems = packs.load_text(text, "new.yaml")
    assert problems == []
    assert len(pack.rules) == 1
    expected_pack, _, expected_id = rule_id.rpartition("/")
    assert pack.rules[0].qualified_id == f"{expected_pack or pack_name}/{expected_id}"
    outcomes = examples.run(pack.rules)
    assert [o.problems for o in outcomes] == [[]]
    assert outcomes[0].checked >= 2
    assert _errors(safeyaml.load(text).data) == []
    assert "TODO" in text


def test_scaffold_default_pack_name():
    pack, problems = packs.load_text(scaffold.new_pack("first-rule"), "new.yaml")
    assert problems == [] and pack.name == "my-pack"


@pytest.mark.parametrize("rule_id", ["Bad", "has space", "", "-dash", "a/"])
def test_scaffold_rejects_a_bad_id(rule_id):
    with pytest.raises(RulePackError):
        scaffold.new_pack(rule_id)


# ---- docs -----------------------------------------------------------------------------------

def _docs() -> str:
    return DOCS.read_text(encoding="utf-8")


@pytest.mark.parametrize("op", list(conditions.OPERATORS))
def test_every_operator_is_documented(op):
    # a row of the operator table starts with the operator in backticks
    assert re.search(rf"^\| `{re.escape(op)}` \|", _docs(), re.MULTILINE), op


@pytest.mark.parametrize("key", sorted(packs.PACK_KEYS | packs.RULE_KEYS))
def test_every_pack_and_rule_key_is_documented(key):
    assert re.search(rf"^\| `{re.escape(key)}` \|", _docs(), re.MULTILINE), key


@pytest.mark.parametrize("limit", [safeyaml.MAX_BYTES, safeyaml.MAX_NODES, safeyaml.MAX_DEPTH,
                                   packs.MAX_RULES, packs.MAX_CONDITION_NODES, packs.MAX_CONDITION_DEPTH,
                                   packs.MAX_EXAMPLES, conditions.MAX_PATTERN])
def test_every_limit_is_documented_with_its_value(limit):
    assert f"{limit:,}" in _docs() or str(limit) in _docs(), limit


def test_every_yaml_block_in_the_docs_that_is_a_pack_validates():
    """Each ```yaml block starting with `pack:` is a complete pack: it must load and its examples pass."""
    blocks = re.findall(r"```yaml\n(.*?)```", _docs(), re.DOTALL)
    packs_in_docs = [b for b in blocks if re.match(r"(#.*\n)*pack:", b) and "broken on purpose" not in b]
    assert packs_in_docs, "docs/rules.md should carry at least one complete pack"
    for block in packs_in_docs:
        pack, problems = packs.load_text(block, "docs/rules.md")
        assert problems == [], block[:200]
        assert all(o.ok for o in examples.run(pack.rules)), pack.name


def test_the_worked_example_in_the_docs_is_the_test_pack():
    text = (ROOT / "tests" / "data" / "packs" / "acme-web.yaml").read_text(encoding="utf-8")
    body = text[text.index("pack: acme-web"):]
    assert body in _docs()


# ---- docs/facts.md ---------------------------------------------------------------------------

_FREE_KEYS = {"labels", "unknown", "port_owners"}  # maps whose keys are data, not fact names


def _paths(value, prefix: str):
    """Every dotted fact name in a facts dict; `[]` marks the elements of a list of objects."""
    if isinstance(value, dict):
        for key, child in value.items():
            name = f"{prefix}.{key}"
            yield name
            if key not in _FREE_KEYS:
                yield from _paths(child, name)
    elif isinstance(value, list) and value and isinstance(value[0], dict):
        yield from _paths(value[0], prefix + "[]")


def _rich_container() -> dict:
    """container_facts on an inspect result that fills every optional part (compose, health,
    listeners, logs, a published port and a host-port conflict)."""
    import datetime as dt

    from doctor.collect.docker import container_facts

    inspect = {
        "Id": "f" * 64, "Name": "/shop-web-1", "Image": "sha256:abc", "Created": "2026-11-27T08:00:00Z",
        "RestartCount": 0,
        "Config": {"Image": "acme/web:1", "Env": ["PORT=3000"], "Cmd": ["node", "server.js"],
                   "Labels": {"com.docker.compose.project": "shop", "com.docker.compose.service": "web"},
                   "ExposedPorts": {"3000/tcp": {}}, "Healthcheck": {"Test": ["CMD", "true"]}},
        "HostConfig": {"NetworkMode": "bridge", "PortBindings": {"3000/tcp": [{"HostIp": "", "HostPort": "8080"}]}},
        "State": {"Status": "running", "Running": True, "Pid": 42, "ExitCode": 0,
                  "Error": "Bind for 0.0.0.0:8080 failed: port is already allocated",
                  "StartedAt": "2026-11-27T08:00:01Z", "FinishedAt": "0001-01-01T00:00:00Z",
                  "Health": {"Status": "healthy", "FailingStreak": 0,
                             "Log": [{"ExitCode": 0, "Output": "ok", "Start": "2026-11-27T08:00:05Z"}]}},
        "NetworkSettings": {"Ports": {"3000/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]},
                            "Networks": {"bridge": {"IPAddress": "172.17.0.2", "Aliases": None}}},
    }
    listeners = [{"address": "0.0.0.0", "port": 3000, "proto": "tcp", "endpoint": "0.0.0.0:3000"}]
    logs = {"lines": ["listening on 3000"], "times": ["2026-11-27T08:00:02Z"], "truncated": False}
    facts = container_facts(inspect, logs, "docker logs", listeners, "/proc/42/net/tcp",
                            dt.datetime(2026, 11, 27, 9, tzinfo=dt.timezone.utc))
    for port in facts["ports"]:  # joined in by collect() for a conflicting host port
        if port["host_conflict"]:
            port["host_conflict"]["holder"] = {"kind": "container", "name": "other", "id": "0123456789ab"}
    return facts


SAME_SHAPE = ("container.ports[]", "item.listeners[]", "item.reachable_listeners[]")


def test_every_container_fact_is_documented():
    documented = FACTS_DOCS.read_text(encoding="utf-8")
    facts = _rich_container()
    names = set(_paths(facts, "container"))
    names |= set(_paths(facts["ports"][0], "item"))
    # documented once, as item.* and container.listeners[].*: the same shapes
    names = {n for n in names if not n.startswith(SAME_SHAPE)}
    assert facts["ports"][0]["host_conflict"], "the rich container should have a host conflict"
    missing = sorted(name for name in names if f"`{name}`" not in documented)
    assert missing == []


def test_every_host_fact_is_documented():
    from doctor.collect import docker as collector

    class FakeApi:  # the three calls collect() makes when no container is selected
        base_url = "http+docker://localhost"

        def version(self):
            return {"Version": "27.0.0", "ApiVersion": "1.46", "Os": "linux", "Arch": "amd64",
                    "Platform": {"Name": "Docker Engine"}}

        def containers(self, all=False):
            return []

    snapshot = collector.collect(FakeApi())
    documented = FACTS_DOCS.read_text(encoding="utf-8")
    missing = sorted(name for name in _paths(snapshot["host"], "host") if f"`{name}`" not in documented)
    assert missing == []


def test_the_config_example_in_the_docs_loads_and_every_selector_matches():
    from doctor import config as config_file

    blocks = re.findall(r"```yaml\n(# dockdoc.yaml\n.*?)```", _docs(), re.DOTALL)
    assert len(blocks) == 1
    config = config_file.parse(safeyaml.load(blocks[0]), str(ROOT / "docs" / "dockdoc.yaml"))
    assert config.packs == [str(ROOT / "docs" / "rules" / "acme-web.yaml")]  # relative to the config file
    loaded = packs.load_all([str(ROOT / "tests" / "data" / "packs" / "acme-web.yaml")], entry_points=False)
    kept = config_file.apply_to_rules(config, packs.all_rules(loaded))  # raises if a selector matches nothing
    ids = {rule.qualified_id: rule for rule in kept}
    assert "dockdoc/expose-mismatch" not in ids and "acme-web/inspector-published" not in ids
    assert "acme-web/node-port-env" in ids
    assert "dockdoc/published-loopback-only" not in ids
    assert ids["dockdoc/not-published"].severity == "warning"


@pytest.mark.parametrize("cause", sorted(CAUSES))
def test_every_cause_is_listed_in_the_docs(cause):
    assert f"`{cause}`" in _docs()


def test_the_broken_pack_in_the_docs_gives_the_errors_shown():
    """The validate example in the docs is real output: same errors, same lines."""
    docs = _docs()
    block = re.search(r"```yaml\n(# team.yaml, broken on purpose\n.*?)```", docs, re.DOTALL).group(1)
    shown = re.search(r"\$ dockdoc rules validate team.yaml\n(.*?)\$ echo", docs, re.DOTALL).group(1)
    _pack, problems = packs.load_text(block, "team.yaml")
    assert problems == shown.strip().splitlines()


# The schema and the loader agree on what is optional (null) and on the edge cases of values.
AGREE = {
    "version null": (lambda d: d.update(version=None), True),
    "description null": (lambda d: d.update(description=None), True),
    "requires null": (lambda d: d.update(requires=None), True),
    "each null": (lambda d: d["rules"][0].update(each=None), True),
    "unless null": (lambda d: d["rules"][0].update(unless=None), True),
    "evidence null": (lambda d: d["rules"][0].update(evidence=None), False),
    "evidence one string": (lambda d: d["rules"][0].update(evidence="x {container.name}"), True),
    "fix null": (lambda d: d["rules"][0].update(fix=None), True),
    "docs null": (lambda d: d["rules"][0].update(docs=None), True),
    "examples null": (lambda d: d["rules"][0].update(examples=None), True),
    "examples match null": (lambda d: d["rules"][0].update(examples={"match": None}), False),
    "present with value null": (lambda d: d["rules"][0].update(when={"fact": "a", "op": "present", "value": None}),
                                True),
    "in with null and number": (lambda d: d["rules"][0].update(when={"fact": "a", "op": "in", "value": [None, 1]}),
                                True),
    "in an empty list": (lambda d: d["rules"][0].update(when={"fact": "a", "op": "in", "value": []}), True),
    "contains a list": (lambda d: d["rules"][0].update(when={"fact": "a", "op": "contains", "value": [1]}), True),
    "gt a string": (lambda d: d["rules"][0].update(when={"fact": "a", "op": "gt", "value": "x"}), True),
    "empty fact": (lambda d: d["rules"][0].update(when={"fact": "", "op": "present"}), False),
    "not of a list": (lambda d: d["rules"][0].update(when={"not": []}), False),
    "title null": (lambda d: d["rules"][0].update(title=None), False),
    "501 rules": (lambda d: d.update(rules=[copy.deepcopy(d["rules"][0]) for _ in range(501)]), False),
}


@pytest.mark.parametrize("name", AGREE)
def test_schema_and_loader_agree(name):
    mutate, valid = AGREE[name]
    data = _break(mutate)
    _pack, problems = packs.parse_pack(safeyaml.Document(data, {}), "x.yaml")
    assert (problems == []) is valid, problems
    assert (_errors(data) == []) is valid


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


@pytest.mark.parametrize("page", ["rules.md", "facts.md"])
def test_links_between_the_docs_resolve(page):
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    for target, anchor in re.findall(r"\]\(((?:rules|facts)\.md)?#([^)]+)\)", text):
        other = (ROOT / "docs" / (target or page)).read_text(encoding="utf-8")
        anchors = {_slug(h) for h in re.findall(r"^#+ (.*)$", other, re.MULTILINE)}
        assert anchor in anchors, f"{page}: link to {target or page}#{anchor}"
