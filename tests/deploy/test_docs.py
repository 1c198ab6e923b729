"""The documentation a newcomer reads: a short README that starts with the two commands, links that
resolve, and a configuration reference that matches the settings classes."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = REPO / "docs"
CONFIGURATION = DOCS / "configuration.md"
MARKDOWN = [README, *sorted(DOCS.rglob("*.md"))]
SETTINGS_MODULES = (
    "rescind_common.settings",
    "rescind_common.kafka",
    "consent_api.config",
    "registry.config",
    "revocation_worker.config",
)

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*$", re.M)


def prose(path: Path) -> str:
    """The file without its fenced code blocks (a `# comment` in a shell block is no heading)."""
    return FENCE.sub("", path.read_text())


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, text in HEADING.findall(prose(path)):
        base = slug(text)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


@pytest.mark.parametrize("doc", MARKDOWN, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(doc: Path) -> None:
    broken = []
    for target in LINK.findall(prose(doc)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with that anchor in {dest.relative_to(REPO)}")
    assert not broken, f"{doc.relative_to(REPO)}: {broken}"


def test_readme_is_short_and_starts_with_the_two_commands() -> None:
    text = README.read_text()
    assert len(text.encode()) <= 10 * 1024, f"README.md is {len(text.encode())} bytes; the rest goes to docs/"
    assert prose(README).startswith("# Rescind\n")
    sections = prose(README).split("\n## ")
    intro, first = sections[0], sections[1]
    assert intro.count("\n#") == 0, "nothing but the intro before the first section"
    assert first.startswith("The two commands")
    assert "make run" in first and "make test" in first
    names = [s.split("\n", 1)[0] for s in sections[1:]]
    # The project's rule: the two commands, then configuration, then architecture.
    assert names.index("Configuration") < names.index("Architecture")
    for doc in ("architecture", "api", "configuration", "operations", "performance", "development"):
        assert f"(docs/{doc}.md)" in text, f"README does not link docs/{doc}.md"


def test_configuration_doc_is_generated_from_the_settings_classes() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "config_docs.py")],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    assert CONFIGURATION.read_text() == out, "docs/configuration.md is stale: run `make docs`"


def settings_classes() -> list[type[BaseSettings]]:
    for name in SETTINGS_MODULES:
        importlib.import_module(name)
    found: list[type[BaseSettings]] = []
    todo = list(BaseSettings.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls.__module__.split(".")[0] in {m.split(".")[0] for m in SETTINGS_MODULES}:
            found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_every_setting_is_documented() -> None:
    doc = CONFIGURATION.read_text()
    classes = settings_classes()
    assert len(classes) >= 5
    missing = []
    for cls in classes:
        prefix = cls.model_config.get("env_prefix", "")
        for field in cls.model_fields:
            env = f"{prefix}{field}".upper()
            row = next((line for line in doc.splitlines() if line.startswith(f"| `{env}` |")), None)
            if row is None:
                missing.append(env)
            else:
                assert not row.rstrip().endswith("|  |"), f"{env} has no description: add a comment above it"
    assert not missing, f"not in docs/configuration.md (run `make docs`): {missing}"
