"""The base of the kit's option dataclasses, and the generated table of every option (docs/options.md).

    @dataclass
    class PotConfig(Options):
        lr: float = 1e-3  # Adam learning rate
        #   (a comment line directly below that starts with "#" and two or more spaces continues the help)

``Options`` gives each of them the same three methods:

* ``replace(**changes)``: a copy with some fields changed; an unknown name is refused (the message names the
  class and lists its fields) and the new values go through the class's own checks (``__post_init__``);
* ``to_dict()``: the fields in order, tuples as lists (JSON/YAML-safe). Row fingerprints and checkpoint
  names hash this dict: it must not change for a given object;
* ``from_dict(values)``: the inverse (lists back to tuples where the field is a tuple); unknown keys refused.

Each field is documented once, by the trailing ``# comment`` on its line; ``option_rows`` reads it back from the
source and ``write_docs()`` writes the table to docs/options.md (``tests/test_options.py`` checks that the
committed file is current and that no field lacks its comment).
"""
from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import io
import re
import textwrap
import tokenize
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

# (module, class) of every options dataclass, in the order of docs/options.md. NanoConfig is documented but
# does not inherit Options: fcpts/nano.py imports nothing from the kit (tests/test_nano.py).
OPTION_CLASSES = (
    ("fcpts.config", "Config"),
    ("fcpts.learners", "StrConfig"),
    ("fcpts.learners", "ProbMaskConfig"),
    ("fcpts.dsa", "DsaConfig"),
    ("fcpts.pot", "PotConfig"),
    ("fcpts.prune_train", "PruneTrainConfig"),
    ("fcpts.dst", "DstConfig"),
    ("fcpts.models", "DenseRecipe"),
    ("fcpts.nano", "NanoConfig"),
)

DOCS_PATH = Path(__file__).resolve().parents[1] / "docs" / "options.md"
REGENERATE = 'python -c "from fcpts.options import write_docs; write_docs()"'
T = TypeVar("T", bound="Options")
_CONTINUATION = re.compile(r"#\s{2,}\S")  # "#   more text": continues the help of the field above
_GROUP = re.compile(r"#\s*---\s*(.*?)\s*-*\s*$")  # "# --- what is pruned ---": a heading for the fields below


class OptionRow(NamedTuple):
    name: str
    type: str  # the annotation as written
    default: str  # repr of the default; a default_factory as its call (e.g. "default_num_workers()")
    help: str  # the field's trailing comment and its continuation lines
    group: str = ""  # the last "# --- heading ---" above the field, if any


class Options:
    """Base of a ``@dataclass`` of options: validated ``replace``, ``to_dict``/``from_dict``, ``option_rows``."""

    def replace(self: T, **changes: Any) -> T:
        check_fields(type(self), changes)
        return dataclasses.replace(self, **changes)  # runs __init__, hence __post_init__'s checks

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls: type[T], values: dict[str, Any]) -> T:
        return cls(**field_values(cls, values))

    @classmethod
    def option_rows(cls) -> list[OptionRow]:
        return option_rows(cls)


def check_fields(cls: type, names) -> None:
    """Refuse names that are not fields of the dataclass ``cls``."""
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(names) - set(valid))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}; "
                         f"valid fields: {', '.join(valid)}")


def _is_tuple_field(f: dataclasses.Field) -> bool:
    annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return annotation.lower().startswith("tuple") or isinstance(f.default, tuple)


def field_values(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (e.g. read from YAML or JSON) checked against the fields of ``cls``, lists turned back into
    tuples for tuple fields."""
    check_fields(cls, values)
    tuples = {f.name for f in dataclasses.fields(cls) if _is_tuple_field(f)}
    return {k: tuple(v) if k in tuples and isinstance(v, list) else v for k, v in values.items()}


# ----- reading the documentation back from the source -----
def _source_fields(klass: type) -> dict[str, dict[str, Any]]:
    """For each field assigned in ``klass``'s own body: its annotation and default as written, its help and
    group, from the source."""
    source = textwrap.dedent(inspect.getsource(klass))
    lines = source.splitlines()
    comments: dict[int, str] = {}  # line number -> comment text
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string
    node = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef))
    out: dict[str, dict[str, Any]] = {}
    group = ""
    previous_end = node.body[0].lineno - 1 if node.body else node.lineno
    for stmt in node.body:
        for number in range(previous_end + 1, stmt.lineno):  # comment lines between statements
            text = lines[number - 1].strip()
            match = _GROUP.match(text) if text.startswith("#") else None
            if match:
                group = match.group(1)
        previous_end = stmt.end_lineno
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        help_parts = []
        if stmt.end_lineno in comments:
            help_parts.append(comments[stmt.end_lineno].lstrip("#").strip())
        number = stmt.end_lineno + 1
        while number <= len(lines) and _CONTINUATION.match(lines[number - 1].strip()):
            help_parts.append(lines[number - 1].strip().lstrip("#").strip())
            number += 1
        out[stmt.target.id] = dict(
            type=ast.get_source_segment(source, stmt.annotation),
            value=stmt.value and ast.get_source_segment(source, stmt.value),
            factory=_factory_text(source, stmt.value),
            help=" ".join(p for p in help_parts if p),
            group=group,
        )
    return out


def _factory_text(source: str, value: ast.expr | None) -> str:
    """``field(default_factory=...)`` as the call that makes the default: ``default_num_workers()`` for a lambda
    wrapping it, ``dict()`` for ``dict``."""
    if not isinstance(value, ast.Call):
        return ""
    for keyword in value.keywords:
        if keyword.arg == "default_factory":
            if isinstance(keyword.value, ast.Lambda):
                return ast.get_source_segment(source, keyword.value.body)
            return f"{ast.get_source_segment(source, keyword.value)}()"
    return ""


def option_rows(cls: type) -> list[OptionRow]:
    """One row per field of the dataclass ``cls`` (inherited fields included), documented from the source."""
    written: dict[str, dict[str, Any]] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass) and "__dataclass_fields__" in vars(klass):
            written.update(_source_fields(klass))
    rows = []
    for f in dataclasses.fields(cls):
        info = written.get(f.name, {})
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            made = f.default_factory()
            default = repr(made) if f.default_factory in (dict, list, tuple, set) else info.get("factory") or repr(made)
        else:
            default = "(required)"
        annotation = info.get("type") or (f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type)))
        rows.append(OptionRow(f.name, annotation, default, info.get("help", ""), info.get("group", "")))
    return rows


# ----- docs/options.md -----
def _load(module: str, name: str) -> type:
    return getattr(importlib.import_module(module), name)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _summary(cls: type) -> str:
    doc = vars(cls).get("__doc__") or ""
    if doc.startswith(f"{cls.__name__}("):  # the signature dataclasses writes when there is no docstring
        return ""
    return " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())


def markdown_table(classes=OPTION_CLASSES) -> str:
    """docs/options.md: one section per options class, with a row per field (default and meaning)."""
    out = [
        "# Options",
        "",
        "Every option of the kit, generated from the source: a field's meaning is the comment on its line there.",
        "Do not edit this file by hand: change the comment, then run",
        f"`{REGENERATE}`;",
        "`tests/test_options.py` fails while this file differs from the source.",
        "",
        "Each class but `NanoConfig` is a dataclass built on `fcpts.options.Options`: `replace(**changes)` refuses",
        "unknown names and re-runs the class's checks, `to_dict()` gives the fields with tuples as lists",
        "(JSON/YAML-safe; row fingerprints hash it) and `from_dict(values)` reverses it.",
        "",
        "| class | module | options |",
        "|---|---|---|",
    ]
    loaded = [(module, _load(module, name)) for module, name in classes]
    for module, cls in loaded:
        anchor = cls.__name__.lower()
        out.append(f"| [`{cls.__name__}`](#{anchor}) | `{module}` | {len(dataclasses.fields(cls))} |")
    for module, cls in loaded:
        out += ["", f"## {cls.__name__}", "", f"`{module}.{cls.__name__}`"]
        summary = _summary(cls)
        if summary:
            out[-1] += f": {summary}"
        out += ["", "| option | type | default | meaning |", "|---|---|---|---|"]
        group = ""
        for row in option_rows(cls):
            if row.group and row.group != group:
                group = row.group
                out.append(f"| *{_cell(group)}* | | | |")
            out.append(f"| `{row.name}` | `{_cell(row.type)}` | `{_cell(row.default)}` | {_cell(row.help)} |")
    return "\n".join(out) + "\n"


def write_docs(path: str | Path = DOCS_PATH) -> Path:
    """Write ``markdown_table()`` to ``path`` (docs/options.md of the checkout by default)."""
    path = Path(path)
    path.write_text(markdown_table(), encoding="utf-8")
    return path
