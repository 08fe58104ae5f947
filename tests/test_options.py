"""The options base (fcpts.options): validated replace, to_dict/from_dict, and docs/options.md kept current."""
import ast
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from fcpts.options import OPTION_CLASSES, REGENERATE, Options, _load, markdown_table, option_rows

ROOT = Path(__file__).resolve().parents[1]
CLASSES = {name: _load(module, name) for module, name in OPTION_CLASSES}
BASED = {name: cls for name, cls in CLASSES.items() if name != "NanoConfig"}  # nano.py imports nothing from fcpts

# one changed value per class (a tuple where the class has one), and one value its checks refuse
CHANGED = {
    "Config": dict(exclude=("fc",), block_patterns=("layer1.*", "layer2.*"), steps=7),
    "StrConfig": dict(export="masked"),
    "ProbMaskConfig": dict(final_samples=3),
    "DsaConfig": dict(final="sample"),
    "PotConfig": dict(lr=1e-2, iterations_per_layer=3),
    "PruneTrainConfig": dict(include=("layer*",), schedule_options={"beta": 6}, optimizer="sgd"),
    "DstConfig": dict(c=0.0),
    "DenseRecipe": dict(seed=3),
}
REFUSED = {
    "Config": ("steps", 0),
    "StrConfig": ("export", "pruned"),
    "ProbMaskConfig": ("ramp_start", 0.9),
    "DsaConfig": ("final", "best"),
    "PotConfig": ("correction", "affine"),
    "PruneTrainConfig": ("optimizer", "adam"),
    "DstConfig": ("bonus", "cube"),
}


def test_docs_options_md_is_current():
    committed = (ROOT / "docs" / "options.md").read_text(encoding="utf-8")
    assert committed == markdown_table(), f"docs/options.md is stale: run `{REGENERATE}`"


def test_every_options_dataclass_is_listed():
    """A new *Config/*Recipe dataclass under fcpts/ must join OPTION_CLASSES (and so docs/options.md)."""
    found = set()
    for path in (ROOT / "fcpts").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and node.name.endswith(("Config", "Recipe")) and any(
                    "dataclass" in ast.unparse(d) for d in node.decorator_list):
                module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
                found.add((module, node.name))
    assert found == set(OPTION_CLASSES)


@pytest.mark.parametrize("name", list(CLASSES))
def test_every_field_has_a_help_text(name):
    rows = option_rows(CLASSES[name])
    assert [r.name for r in rows] == [f.name for f in dataclasses.fields(CLASSES[name])]
    assert [r.name for r in rows if not r.help] == [], f"add a trailing `# help` comment to these {name} fields"


@pytest.mark.parametrize("name", list(BASED))
def test_replace_refuses_unknown_fields(name):
    cls = BASED[name]
    with pytest.raises(ValueError, match=f"unknown {name} field\\(s\\): nope, zzz; valid fields: .*"
                                         f"{dataclasses.fields(cls)[-1].name}"):
        cls().replace(zzz=1, nope=2)
    with pytest.raises(ValueError, match=f"unknown {name} field"):
        cls.from_dict({**cls().to_dict(), "nope": 1})


@pytest.mark.parametrize("name", list(REFUSED))
def test_replace_runs_the_class_checks(name):
    cls = BASED[name]
    original = cls()
    key, bad = REFUSED[name]
    with pytest.raises(ValueError):
        original.replace(**{key: bad})
    assert original == cls()  # unchanged


@pytest.mark.parametrize("name", list(BASED))
def test_replace_returns_a_changed_copy(name):
    cls = BASED[name]
    original = cls()
    changed = original.replace(**CHANGED[name])
    assert changed is not original and original == cls()
    assert all(getattr(changed, k) == v for k, v in CHANGED[name].items())


@pytest.mark.parametrize("name", list(BASED))
def test_to_dict_from_dict_round_trip(name):
    cls = BASED[name]
    for obj in (cls(), cls().replace(**CHANGED[name])):
        d = obj.to_dict()
        assert list(d) == [f.name for f in dataclasses.fields(cls)]
        assert not any(isinstance(v, tuple) for v in d.values())  # JSON/YAML-safe
        assert json.loads(json.dumps(d)) == d
        assert cls.from_dict(yaml.safe_load(yaml.safe_dump(d))) == obj
        assert cls.from_dict(d) == obj


def test_config_from_dict_keeps_its_presets():
    from fcpts import Config

    assert Config.from_dict({"preset": "quick_cpu", "steps": 5, "exclude": ["fc"]}) == Config.quick_cpu(steps=5, exclude=("fc",))
    assert Config.from_dict({"steps": 5}, preset="kit_cpu") == Config.kit_cpu(steps=5)
    with pytest.raises(ValueError, match="unknown preset"):
        Config.from_dict({"preset": "fast"})


def test_to_dict_keeps_the_fingerprinted_form():
    """Row fingerprints (fcpts.runner) and checkpoint names (DenseRecipe.key) hash to_dict: fields in order,
    tuples as lists, nothing else converted."""
    from fcpts import Config
    from fcpts.models import DenseRecipe
    from fcpts.prune_train import PruneTrainConfig

    c = Config.quick_cpu(exclude=("fc",))
    assert c.to_dict() == {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(c).items()}
    assert c.to_dict()["exclude"] == ["fc"] and c.to_dict()["include"] == ["*"]
    p = PruneTrainConfig(schedule_options={"beta": 6})
    assert p.to_dict()["schedule_options"] == {"beta": 6} and p.to_dict()["schedule_options"] is not p.schedule_options
    assert DenseRecipe().key() == "19316d30c468"  # the embedded checkpoint, as benchmarks/results/*.json name it


@dataclass
class _Documented(Options):
    """A documented example."""

    # --- first group ---
    a: int = 1  # the a
    b: tuple[str, ...] = ("x",)  # the b, which
    #   continues here
    #   and here
    # --- second group ---
    c: dict = field(default_factory=dict)  # a "#" inside the help is kept
    # a plain comment, not a continuation
    d: float = field(default_factory=lambda: float(2))  # made by a call


def test_option_rows_read_the_source():
    rows = option_rows(_Documented)
    assert [(r.name, r.type, r.default, r.group) for r in rows] == [
        ("a", "int", "1", "first group"), ("b", "tuple[str, ...]", "('x',)", "first group"),
        ("c", "dict", "{}", "second group"), ("d", "float", "float(2)", "second group")]
    assert [r.help for r in rows] == ["the a", "the b, which continues here and here", 'a "#" inside the help is kept',
                                      "made by a call"]
    assert _Documented.option_rows() == rows
    assert _Documented.from_dict({"b": ["y", "z"]}).b == ("y", "z")
