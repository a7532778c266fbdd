"""What the knowledge tests share: a SQLite project with a filesystem knowledge base."""

from __future__ import annotations

from pathlib import Path

REPO_DOCS = Path(__file__).resolve().parents[2] / "docs"

ALPHA = """# Alpha guide

## Installing

Install the alpha package with pip, then run alpha init in an empty folder.

## Backups

Copy the alpha database file while alpha sleeps; restore it by copying it back.
"""

BETA = """# Beta notes

Beta talks to the weather service. Forecasts arrive every hour as JSON documents.
"""

SEARCH_WORKFLOW = """\
id: ask
input:
  type: object
  properties: {q: {type: string}}
  required: [q]
tasks:
  - id: search
    tool: knowledge_search
    with: {kb: notes, query: "{{ input.q }}", top_k: 2}
outputs:
  best: "{{ tasks.search.output.matches[0].source }}"
"""


def write_project(
    folder: Path,
    *,
    sources: str = "[{glob: 'notes/**/*.md'}, {path: notes/extra.txt}]",
    extra: str = "",
    workflows: bool = False,
) -> Path:
    """A project in ``folder``: SQLite, a filesystem vector DB, knowledge base ``notes`` over
    notes/alpha.md, notes/beta.md and notes/extra.txt; returns its compozy.yaml."""
    notes = folder / "notes"
    notes.mkdir(parents=True, exist_ok=True)
    (notes / "alpha.md").write_text(ALPHA, encoding="utf-8")
    (notes / "beta.md").write_text(BETA, encoding="utf-8")
    (notes / "extra.txt").write_text("Gamma is a plain text file about gardening.\n")
    config = folder / "compozy.yaml"
    text = (
        "database: {driver: sqlite, path: .compozy/compozy.db}\n"
        "knowledge:\n"
        "  vector_dbs:\n"
        "    - {id: local, provider: filesystem, path: .compozy/vectors, dimension: 256}\n"
        f"  knowledge_bases: [{{id: notes, sources: {sources}}}]\n"
        f"{extra}"
    )
    if workflows:
        (folder / "ask.yaml").write_text(SEARCH_WORKFLOW, encoding="utf-8")
        text += "workflows: ['*.yaml']\n"
    config.write_text(text, encoding="utf-8")
    return config
