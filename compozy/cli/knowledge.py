"""``compozy knowledge list|ingest|query``: the knowledge bases of ``compozy.yaml``.

These commands open the vector stores directly (not through a server), as ``compozy start``
does; progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from compozy.cli.runtime import ConfigFlags, config_options
from compozy.knowledge.bases import KnowledgeBases, match_json

__all__ = ["ingest", "knowledge_app", "list_bases", "query"]

knowledge_app = typer.Typer(
    help="List, ingest and query the knowledge bases of compozy.yaml (docs/knowledge.md).",
    context_settings={"help_option_names": ["-h", "--help"]},
)

KbId = Annotated[str, typer.Argument(metavar="KB", help="The knowledge base id.")]
_SHOWN = 240  # characters of a chunk's text a query prints


def _progress(line: str) -> None:
    typer.echo(line, err=True)


@knowledge_app.command("list")
@config_options
def list_bases(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    *,
    flags: ConfigFlags,
) -> None:
    """List the configured knowledge bases: id, vector DB, embedder, sources."""
    knowledge = flags.load().knowledge
    rows = [
        {
            "id": base.id,
            "description": base.description,
            "vector_db": base.vector_db,
            "embedder": knowledge.embedder_for(base).id,
            "sources": [str(source.path or source.glob) for source in base.sources],
        }
        for base in knowledge.knowledge_bases
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not rows:
        typer.echo("no knowledge bases are configured (knowledge.knowledge_bases)", err=True)
    for base in knowledge.knowledge_bases:
        sources = ", ".join(str(source.path or source.glob) for source in base.sources)
        typer.echo(
            f"{base.id}  vector_db={base.vector_db}  embedder={knowledge.embedder_for(base).id}  "
            f"sources={sources}"
        )


@knowledge_app.command("ingest")
@config_options
def ingest(kb: KbId, *, flags: ConfigFlags) -> None:
    """Read KB's sources and store their chunks; only changed files are embedded again."""
    with KnowledgeBases(flags.load()) as bases:
        bases.config_of(kb)  # an unknown id is reported before anything is opened
        bases.ingest(kb, progress=_progress)


@knowledge_app.command("query")
@config_options
def query(
    kb: KbId,
    text: Annotated[str, typer.Argument(metavar="TEXT", help="What to search for.")],
    top_k: Annotated[
        int | None,
        typer.Option(
            "--top-k",
            "-k",
            min=1,
            max=50,
            help="How many chunks to return (default: the knowledge base's retrieval.top_k).",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the matches as JSON, as the API answers.")
    ] = False,
    *,
    flags: ConfigFlags,
) -> None:
    """Print the chunks of KB most similar to TEXT: rank, score, source and the text."""
    with KnowledgeBases(flags.load()) as bases:
        bases.config_of(kb)
        matches = [match_json(m) for m in bases.query(kb, text, top_k=top_k)]
    if as_json:
        typer.echo(json.dumps({"matches": matches}, indent=2, ensure_ascii=False))
        return
    if not matches:
        typer.echo(f"no matches in {kb} (was it ingested? compozy knowledge ingest {kb})", err=True)
    for rank, match in enumerate(matches, 1):
        where = f"{match['source']}#{match['chunk_index']}"
        typer.echo(f"{rank}. {match['score']:.3f}  {where}")
        typer.echo(f"   {_shorten(match['text'])}")


def _shorten(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _SHOWN else flat[: _SHOWN - 3].rstrip() + "..."
