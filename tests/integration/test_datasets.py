"""Dataset fixtures: built once per worker and backend, a private copy per test."""

from __future__ import annotations

import pytest

from compozy.core import Status
from compozy.store import Store
from compozy_testkit.contract._build import at, task, workflow
from compozy_testkit.datasets import DATASETS, dataset

pytest_plugins = ["pytester"]

BUILT: list[tuple[str, bool]] = []  # (driver, in memory) of each build
EXECUTIONS = 500


@dataset("five-hundred")
def five_hundred(store: Store) -> None:
    BUILT.append((store.driver, store.location == "in-memory"))
    with store.transaction():
        for n in range(EXECUTIONS):
            wf = workflow(store, workflow_id=f"wf-{n % 3}", status=Status.SUCCESS, created_at=at(n))
            task(store, wf, "only", Status.SUCCESS, output={"n": n})


@pytest.mark.compozy_dataset("five-hundred")
@pytest.mark.parametrize("round_", [1, 2, 3])
def test_each_test_gets_its_own_copy_of_a_dataset_built_once(
    compozy_dataset: Store, compozy_backend: str, round_: int
) -> None:
    assert len(compozy_dataset.workflows.list_states()) == EXECUTIONS
    # Built on the first test of this backend, copied for the next ones.
    assert BUILT.count((compozy_dataset.driver, compozy_dataset.location == "in-memory")) == 1
    # What one test changes, the next does not see.
    for wf in compozy_dataset.workflows.list_page(limit=10).items:
        compozy_dataset.workflows.update_status(wf.workflow_exec_id, Status.FAILED)
    failed = compozy_dataset.workflows.list_page(limit=500)
    assert sum(w.status is Status.FAILED for w in failed.items) == 10


def test_an_unknown_dataset_fails_naming_the_known_ones(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        "import pytest\n\n"
        "@pytest.mark.compozy_dataset('nope')\n"
        "def test_x(compozy_dataset):\n    pass\n"
    )
    result = pytester.runpytest_subprocess("--compozy-backend", "sqlite")
    result.stdout.fnmatch_lines(["*no compozy dataset named 'nope' (registered: none)*"])
    assert result.ret == 1
    assert "five-hundred" in DATASETS
