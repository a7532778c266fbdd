"""Query budgets: count the SQL a block of a test sends, as pytest-django's
``django_assert_max_num_queries`` does (the ``compozy_queries`` fixture).

Transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE) is recorded and shown but not
counted: SQLite's driver sends BEGIN as a statement and psycopg does not, and a budget should
mean the same on every backend. A failing test shows every statement its store sent in a
``compozy queries`` section of its report.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

__all__ = ["QueryLog"]

_CONTROL = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE)\b", re.IGNORECASE)


class QueryLog:
    """The statements a Store sent since the test began (``statements``, every one) and the
    queries among them (``queries``, transaction control left out)."""

    def __init__(self, statements: list[str]) -> None:
        self.statements = statements

    @property
    def queries(self) -> list[str]:
        """The statements that are not transaction control."""
        return [s for s in self.statements if not _CONTROL.match(s)]

    def __len__(self) -> int:
        return len(self.queries)

    @contextmanager
    def assert_max(self, budget: int) -> Iterator[None]:
        """Fail the test if the block sends more than ``budget`` queries; the message lists them."""
        start = len(self.statements)
        yield
        sent = [s for s in self.statements[start:] if not _CONTROL.match(s)]
        if len(sent) > budget:
            listing = "\n".join(f"  {n}. {_one_line(s)}" for n, s in enumerate(sent, 1))
            pytest.fail(
                f"{len(sent)} queries ran, over the budget of {budget}:\n{listing}", pytrace=False
            )

    def report(self) -> str:
        """Every statement, numbered, one line each (for a failed test's report)."""
        return "\n".join(f"{n}. {_one_line(s)}" for n, s in enumerate(self.statements, 1))


def _one_line(statement: str) -> str:
    return " ".join(statement.split())
