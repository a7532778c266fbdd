"""Dataset fixtures: a realistic set of rows built once per worker and backend, then cloned
for every test that asks for it (``compozy_dataset`` with ``@pytest.mark.compozy_dataset``).

A dataset is a recipe, a function that fills a migrated Store, registered under a name::

    from compozy_testkit.datasets import dataset, export_dataset

    @dataset("ten-thousand")
    def ten_thousand(store):
        ...  # store 10,000 executions through the repositories

    export_dataset("production-sample", Path(__file__).parent / "sample.jsonl.gz")

The first test that asks for it on a backend pays for the recipe; the result is kept as a
template (an in-memory SQLite database, a SQLite file, a PostgreSQL database) and every test
gets a copy of its own: what one test changes, the next one does not see.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from compozy.store import Store, migrations
from compozy.transfer import import_data, open_input

__all__ = ["DATASETS", "Recipe", "dataset", "export_dataset"]

Recipe = Callable[[Store], None]
"""Fills a migrated, empty Store."""

DATASETS: dict[str, Recipe] = {}
"""Every registered dataset, by name."""


def dataset(name: str) -> Callable[[Recipe], Recipe]:
    """Register the decorated function as the recipe of dataset ``name``."""

    def register(recipe: Recipe) -> Recipe:
        if name in DATASETS and DATASETS[name] is not recipe:
            raise ValueError(f"a dataset named {name!r} is registered already")
        DATASETS[name] = recipe
        return recipe

    return register


def export_dataset(name: str, path: str | Path) -> None:
    """Register dataset ``name`` as the rows of an export file (``compozy export``)."""

    def load(store: Store) -> None:
        with open_input(str(path)) as source:
            import_data(store, source, replace=True)
        # An export of an older schema leaves the store at that revision: bring it to the head.
        migrations.upgrade(store)

    dataset(name)(load)
