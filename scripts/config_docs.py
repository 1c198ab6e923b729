"""Write docs/configuration.md from the pydantic-settings classes.

    .venv/bin/python scripts/config_docs.py > docs/configuration.md    # or: make docs
    .venv/bin/python scripts/config_docs.py --check                   # exit 1 if the file is stale

Every class under libs/*/src and services/*/src that derives from `BaseSettings` (directly or
through another settings class) gets a table of the variables it declares: env_prefix + field name,
upper-case; the type and its bounds; the default; and a description, taken from
`Field(description=...)` or else from the comment lines directly above the field. Defaults come
from the classes themselves, never from the environment, so the output is the same on every
machine. Secrets have no default and are never printed.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import io
import json
import re
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "docs" / "configuration.md"
SOURCE_ROOTS = ("libs", "services")
# Names that hold a secret value (a `*_file` names a path to one, which is not itself secret).
SECRET = re.compile(r"(key|token|secret|password)$")
NEEDS = re.compile(r"production needs (RESCIND_[A-Z0-9_]+)(?: or (RESCIND_[A-Z0-9_]+))?")


@dataclass
class SettingsClass:
    name: str
    module: str
    path: Path
    node: ast.ClassDef
    source: str

    @property
    def component(self) -> str:
        """`services/<name>/...` → that service; anything in libs/ is shared."""
        parts = self.path.relative_to(REPO).parts
        return parts[1] if parts[0] == "services" else "shared"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).parts
    inside = parts[parts.index("src") + 1 :]
    return ".".join((*inside[:-1], path.stem)) if path.stem != "__init__" else ".".join(inside[:-1])


def discover() -> list[SettingsClass]:
    """Every settings class, by reading the source (the bases are resolved by name, to a fixpoint)."""
    candidates: list[SettingsClass] = []
    for root in SOURCE_ROOTS:
        for path in sorted((REPO / root).glob("*/src/**/*.py")):
            if "/proto/" in path.as_posix() or "/migrations/" in path.as_posix():
                continue
            source = path.read_text()
            if "Settings" not in source:
                continue
            for node in ast.parse(source).body:
                if isinstance(node, ast.ClassDef):
                    candidates.append(SettingsClass(node.name, module_name(path), path, node, source))
    known = {"BaseSettings"}
    found: dict[str, SettingsClass] = {}
    changed = True
    while changed:
        changed = False
        for cls in candidates:
            bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in cls.node.bases}
            if cls.name not in found and bases & known:
                found[cls.name] = cls
                known.add(cls.name)
                changed = True

    # Shared ones first (the base of the service classes before the rest), then each service.
    def subclasses(cls: SettingsClass) -> int:
        return sum(any(getattr(b, "id", None) == cls.name for b in o.node.bases) for o in found.values())

    def order(c: SettingsClass) -> tuple[bool, str, int, Path, int]:
        return (c.component != "shared", c.component, -subclasses(c), c.path, c.node.lineno)

    return sorted(found.values(), key=order)


def comments_above(source: str) -> dict[int, list[str]]:
    """Line number → the text of the full-line comment on that line."""
    out: dict[int, list[str]] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT and not tok.line[: tok.start[1]].strip():
            out[tok.start[0]] = [tok.string.lstrip("#").strip()]
    return out


def field_comment(comments: dict[int, list[str]], lineno: int) -> str:
    lines: list[str] = []
    line = lineno - 1
    while line in comments:
        lines[:0] = comments[line]
        line -= 1
    return " ".join(lines)


def required_in_production(classes: list[SettingsClass]) -> dict[str, str]:
    """Variables a validator refuses to start without in production (its message says so)."""
    out: dict[str, str] = {}
    for text in {c.source for c in classes}:
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for m in NEEDS.finditer(node.value):
                    first, other = m.groups()
                    out[first] = "required in production" + (f", or `{other}`" if other else "")
                    if other:
                        out[other] = f"required in production, or `{first}`"
    return out


def type_text(cls: SettingsClass, annotation: ast.expr) -> str:
    """The annotation as written, with a module-level alias (`Profile = Literal[...]`) spelled out."""
    text = ast.unparse(annotation)
    for node in ast.parse(cls.source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if re.search(rf"\b{name}\b", text) and isinstance(node.value, ast.Subscript):
                text = re.sub(rf"\b{name}\b", ast.unparse(node.value), text)
    return text


def bounds(info: FieldInfo) -> str:
    marks = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    out = []
    for meta in info.metadata:
        for attr, sign in marks.items():
            value = getattr(meta, attr, None)
            if value is not None:
                out.append(f"{sign} {value:g}" if isinstance(value, float) else f"{sign} {value}")
    return ", ".join(out)


def render_default(env: str, info: FieldInfo, needs: dict[str, str]) -> str:
    if info.default_factory is not None:
        value: Any = info.default_factory()  # type: ignore[call-arg]
    else:
        value = info.default
    if value is PydanticUndefined:
        return "(required)"
    if value is None:
        return f"— ({needs[env]})" if env in needs else "—"
    if SECRET.search(env.lower()):
        return "(secret: set it)"
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (list, dict)):
        text = json.dumps(value, default=str)
    elif isinstance(value, float):
        text = f"{value:g}"
    else:
        text = str(value)
    return f"`{text}`"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(cls: SettingsClass, needs: dict[str, str]) -> list[str]:
    runtime = getattr(importlib.import_module(cls.module), cls.name)
    prefix = runtime.model_config.get("env_prefix", "")
    comments = comments_above(cls.source)
    rows = ["| variable | type | default | description |", "|---|---|---|---|"]
    for stmt in cls.node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        name = stmt.target.id
        if name.startswith("_") or name == "model_config" or name not in runtime.model_fields:
            continue
        info: FieldInfo = runtime.model_fields[name]
        env = f"{prefix}{name}".upper()
        kind = type_text(cls, stmt.annotation)
        limits = bounds(info)
        kind_cell = f"`{kind}`" + (f" ({limits})" if limits else "")
        description = info.description or field_comment(comments, stmt.lineno)
        default = render_default(env, info, needs)
        rows.append(f"| `{env}` | {cell(kind_cell)} | {cell(default)} | {cell(description)} |")
    return rows


def intro(cls: SettingsClass) -> str:
    doc = ast.get_docstring(cls.node) or ast.get_docstring(ast.parse(cls.source)) or ""
    return " ".join(doc.split())


def generate() -> str:
    classes = discover()
    needs = required_in_production(classes)
    out = [
        "# Configuration",
        "",
        "<!-- Generated by scripts/config_docs.py from the settings classes: do not edit by hand.",
        "     Regenerate with `make docs`; tests/deploy/test_docs.py fails when this file is stale. -->",
        "",
        "Every setting is an environment variable, read with pydantic-settings when a process starts.",
        "Each service reads the shared `RESCIND_*` variables and its own (`RESCIND_CONSENT_*`,",
        "`RESCIND_REGISTRY_*`, `RESCIND_WORKER_*`). Lists and objects are written as JSON",
        '(`RESCIND_AUTH_ALGORITHMS=["ES256"]`). With `RESCIND_PROFILE=production` a service refuses to',
        "start on development keys, the development issuer or a missing secret; in development",
        "`make run` generates keys under `RESCIND_STATE_DIR`. On Kubernetes the ConfigMaps and",
        "ExternalSecrets set them ([operations.md](operations.md)).",
        "",
    ]
    for cls in classes:
        title = "Every service" if cls.component == "shared" else cls.component
        out += [f"## {title}: `{cls.name}`", "", f"`{cls.module}.{cls.name}`. {intro(cls)}".rstrip(), ""]
        out += table(cls, needs)
        out.append("")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help=f"compare with {OUTPUT.relative_to(REPO)}")
    args = parser.parse_args()
    text = generate()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT.relative_to(REPO)} is stale: run `make docs`", file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
