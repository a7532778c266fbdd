"""This project's own test: compozy's fixtures and factories, once per selected backend."""

from compozy.core import Status
from compozy.workflow import WorkflowRepository
from compozy_testkit.factories import TaskStateFactory, WorkflowStateFactory


def test_a_finished_task_tree_completes_its_workflow(
    workflow_factory: type[WorkflowStateFactory],
    task_factory: type[TaskStateFactory],
    workflow_repo: WorkflowRepository,
) -> None:
    workflow = workflow_factory.create(workflow_id="nightly-report")
    tasks = task_factory.tree(
        depth=1, fan_out=2, workflow=workflow, status=Status.SUCCESS, output={"rows": 3}
    )
    root, *children = tasks

    completed = workflow_repo.complete_workflow(workflow.workflow_exec_id)

    assert completed.status is Status.SUCCESS
    # The default output: each top-level task's output by task id (the children's are in
    # their parent's own output, when it has them).
    assert completed.output == {root.task_id: {"rows": 3}}
    assert {child.parent_state_id for child in children} == {root.task_exec_id}
    assert workflow_repo.get_state(workflow.workflow_exec_id) == completed
