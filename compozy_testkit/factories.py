"""factory-boy factories that build compozy entities and persist them through a store.

compozy writes with SQLAlchemy Core, not the ORM, so these factories do not touch tables:
``build()`` only constructs the entity and ``create()`` (or calling the factory) stores it
through the repositories of the store the factory is bound to, exactly as production code
would, so every write passes the same validation and returns the entity as stored.

Bind the factories to one store with :func:`bind` (the ``compozy_factories``,
``workflow_factory``, ``task_factory``, ``user_factory`` and ``api_key_factory`` fixtures do it
for the current test's store)::

    factories = bind(store)
    wf = factories.workflows.create()                # a stored WorkflowState
    task = factories.tasks.create(workflow=wf)       # a stored task of wf
    child = factories.tasks.create(parent=task)      # a child, in its parent's workflow
    tree = factories.tasks.tree(depth=2, fan_out=3)  # 1 + 3 + 9 stored tasks, root first
    key, plaintext = factories.api_keys.create_with_plaintext()
    draft = factories.workflows.build()              # constructed only, nothing stored

Calling a factory class (``factories.workflows()``) is factory-boy's shorthand for
``create()``; mypy types that call as the factory itself, so typed code should use ``create()``.

Sequences (``workflow-<n>``, ``task-<n>``, ``user<n>@example.com``) are counted per process and
shared by every binding, so values are unique across a run but not predictable in a test; the
counters are not thread-safe, so create what a threaded test needs before starting its threads.

This module imports factory-boy, an optional dependency (the ``testkit`` extra); the plugin
only imports it from inside the factory fixtures.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from factory import declarations
from factory.base import Factory

from compozy.auth import APIKey, Role, User
from compozy.auth.keys import TEST_BCRYPT_ROUNDS, new_api_key
from compozy.core import Component, ExecutionType, Status
from compozy.repositories import RepositoryScope, RepositoryStore
from compozy.task import TaskState
from compozy.workflow import WorkflowState

if TYPE_CHECKING:
    pass

__all__ = [
    "APIKeyFactory",
    "FactorySet",
    "RepositoryStore",
    "StoreFactory",
    "TaskStateFactory",
    "UserFactory",
    "WorkflowStateFactory",
    "bind",
    "build_task_tree",
]

T = TypeVar("T")
F = TypeVar("F", bound="StoreFactory[Any]")

# factory-boy's declarations have unannotated constructors; typed as plain callables here so
# that mypy --strict accepts the calls without an ignore on every line.
Sequence: Callable[..., Any] = declarations.Sequence
LazyAttribute: Callable[..., Any] = declarations.LazyAttribute
SelfAttribute: Callable[..., Any] = declarations.SelfAttribute
SubFactory: Callable[..., Any] = declarations.SubFactory
Maybe: Callable[..., Any] = declarations.Maybe


class StoreFactory(Factory[T]):
    """Base factory: ``build()`` constructs, ``create()`` persists through the bound store.

    The store lives on a per-store subclass made by :func:`bind`, never on these base classes,
    so tests running at the same time on different backends never share one.
    """

    class Meta:
        abstract = True

    _store: ClassVar[RepositoryScope | None] = None

    @classmethod
    def _persist(cls, store: RepositoryScope, entity: T) -> T:
        """Write ``entity`` with the right repository method and return it as stored."""
        raise NotImplementedError

    @classmethod
    def _build(cls, model_class: type[T], *args: Any, **kwargs: Any) -> T:
        return model_class(*args, **kwargs)

    @classmethod
    def _create(cls, model_class: type[T], *args: Any, **kwargs: Any) -> T:
        store = cls._store
        if store is None:
            raise RuntimeError(
                f"{cls.__name__} is not bound to a store, so it can only build(); use "
                "compozy_testkit.factories.bind(store) or the compozy factory fixtures to create"
            )
        return cls._persist(store, cls._build(model_class, *args, **kwargs))


class WorkflowStateFactory(StoreFactory[WorkflowState]):
    """A RUNNING workflow execution with a unique ``workflow_id`` and a small input."""

    class Meta:
        model = WorkflowState

    workflow_id = Sequence(lambda n: f"workflow-{n}")
    status = Status.RUNNING
    # A fresh dict per instance: a shared literal would leak mutations between entities.
    input = Sequence(lambda n: {"n": n})

    @classmethod
    def _persist(cls, store: RepositoryScope, entity: WorkflowState) -> WorkflowState:
        return store.workflows.upsert_state(entity)


def _workflow_declaration(workflows: type[WorkflowStateFactory]) -> Any:
    """A task's ``workflow``: a new one for a root task, none for a child (it has its parent's)."""
    return Maybe("parent", yes_declaration=None, no_declaration=SubFactory(workflows))


def _from_workflow(name: str) -> Any:
    """Take ``name`` from the explicit or generated workflow, else from the parent task."""

    def pick(task: Any) -> str:
        source = task.workflow if task.workflow is not None else task.parent
        return cast(str, getattr(source, name))

    return LazyAttribute(pick)


class TaskStateFactory(StoreFactory[TaskState]):
    """A RUNNING basic task with a unique ``task_id``.

    Pass ``workflow=`` (a ``WorkflowState``) to put the task in that execution, or ``parent=``
    (a ``TaskState``) to make it a child in its parent's execution; with neither, a new
    workflow execution is made for it (built or created along with the task).
    """

    class Meta:
        model = TaskState
        exclude = ("workflow", "parent")

    parent: Any = None
    workflow = _workflow_declaration(WorkflowStateFactory)
    task_id = Sequence(lambda n: f"task-{n}")
    workflow_id = _from_workflow("workflow_id")
    workflow_exec_id = _from_workflow("workflow_exec_id")
    parent_state_id = LazyAttribute(
        lambda task: task.parent.task_exec_id if task.parent is not None else None
    )
    component = Component.TASK
    status = Status.RUNNING
    execution_type = ExecutionType.BASIC

    @classmethod
    def _persist(cls, store: RepositoryScope, entity: TaskState) -> TaskState:
        return store.tasks.upsert_state(entity)

    @classmethod
    def tree(
        cls,
        *,
        depth: int,
        fan_out: int,
        workflow: WorkflowState | None = None,
        **task_fields: Any,
    ) -> list[TaskState]:
        """Create a root task and ``fan_out`` children per task, ``depth`` levels below it.

        ``depth=0`` is the root alone; ``depth=2, fan_out=3`` makes 1 + 3 + 9 tasks. Every task
        gets ``task_fields``; the root goes in ``workflow`` (a new execution when None). Returns
        the tasks as stored, in creation order: level by level, root first.
        """
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise ValueError(f"depth must be an int >= 0 (0 is the root alone), not {depth!r}")
        if isinstance(fan_out, bool) or not isinstance(fan_out, int) or fan_out < 1:
            raise ValueError(f"fan_out must be an int >= 1, not {fan_out!r}")
        root_fields = dict(task_fields)
        if workflow is not None:
            root_fields["workflow"] = workflow
        # Overrides of the root's generated workflow (workflow__status=...) mean nothing to
        # children, which live in their parent's execution.
        child_fields = {k: v for k, v in task_fields.items() if not k.startswith("workflow__")}
        created = [cls.create(**root_fields)]
        level = created
        for _ in range(depth):
            level = [
                cls.create(parent=node, **child_fields) for node in level for _ in range(fan_out)
            ]
            created.extend(level)
        return created


class UserFactory(StoreFactory[User]):
    """A user with role USER and a unique email."""

    class Meta:
        model = User

    email = Sequence(lambda n: f"user{n}@example.com")
    role = Role.USER

    @classmethod
    def _persist(cls, store: RepositoryScope, entity: User) -> User:
        return store.auth.create_user(entity)


class APIKeyFactory(StoreFactory[APIKey]):
    """An API key made by ``compozy.auth.keys.new_api_key``: a real bcrypt hash and fingerprint.

    Calling the factory returns the ``APIKey`` as stored, which never holds the plaintext; use
    :meth:`create_with_plaintext` (or :meth:`build_with_plaintext`) to get it as well. The key
    belongs to a new user unless ``user=`` (a stored ``User``) is given. The hash uses bcrypt's
    minimum work factor (test data; production keys use 12), so keys are cheap to make.
    """

    class Meta:
        model = APIKey
        exclude = ("user", "material")

    user = SubFactory(UserFactory)
    user_id = SelfAttribute("user.id")
    # (APIKey, plaintext) from the real key maker; the fields below are read from it.
    material = LazyAttribute(lambda key: new_api_key(key.user_id, bcrypt_rounds=TEST_BCRYPT_ROUNDS))
    prefix = LazyAttribute(lambda key: key.material[0].prefix)
    hash = LazyAttribute(lambda key: key.material[0].hash)
    fingerprint = LazyAttribute(lambda key: key.material[0].fingerprint)
    # Not APIKey fields: handed to _build, which passes the plaintext to the sink and drops both.
    plaintext = LazyAttribute(lambda key: key.material[1])
    plaintext_sink: Any = None

    @classmethod
    def _build(cls, model_class: type[APIKey], *args: Any, **kwargs: Any) -> APIKey:
        plaintext: str = kwargs.pop("plaintext")
        sink: Callable[[str], object] | None = kwargs.pop("plaintext_sink")
        if sink is not None:
            sink(plaintext)
        return model_class(*args, **kwargs)

    @classmethod
    def _persist(cls, store: RepositoryScope, entity: APIKey) -> APIKey:
        return store.auth.create_api_key(entity)

    @classmethod
    def create_with_plaintext(cls, **kwargs: Any) -> tuple[APIKey, str]:
        """Create a key; return it as stored and its plaintext (``cpzy_<prefix>_<secret>``)."""
        plaintexts: list[str] = []
        key = cls.create(plaintext_sink=plaintexts.append, **kwargs)
        return key, plaintexts[0]

    @classmethod
    def build_with_plaintext(cls, **kwargs: Any) -> tuple[APIKey, str]:
        """Build a key without storing it (its user is built too); return it and its plaintext."""
        plaintexts: list[str] = []
        key = cls.build(plaintext_sink=plaintexts.append, **kwargs)
        return key, plaintexts[0]


@dataclass(frozen=True)
class FactorySet:
    """The four factories bound to one store (see :func:`bind`)."""

    store: RepositoryScope
    workflows: type[WorkflowStateFactory]
    tasks: type[TaskStateFactory]
    users: type[UserFactory]
    api_keys: type[APIKeyFactory]


def _bound(base: type[F], store: RepositoryScope, **declarations: Any) -> type[F]:
    # A new subclass rather than an attribute set on `base`: a module-level binding would leak
    # between tests and between backends running side by side. factory-boy keeps one sequence
    # counter for a factory and its subclasses, so ids stay unique across the whole run.
    namespace = {"_store": store, "__module__": __name__, "__doc__": base.__doc__, **declarations}
    # new_class, not type(): it picks factory-boy's metaclass, which turns the namespace into
    # the subclass's declarations.
    subclass = types.new_class(base.__name__, (base,), exec_body=lambda ns: ns.update(namespace))
    return cast("type[F]", subclass)


def bind(store: RepositoryScope) -> FactorySet:
    """Factories that create through ``store``'s repositories, sub-factories included."""
    workflows = _bound(WorkflowStateFactory, store)
    users = _bound(UserFactory, store)
    # The sub-factories are redeclared so that related entities go to the same store.
    tasks = _bound(TaskStateFactory, store, workflow=_workflow_declaration(workflows))
    api_keys = _bound(APIKeyFactory, store, user=SubFactory(users))
    return FactorySet(store, workflows, tasks, users, api_keys)


def build_task_tree(
    store: RepositoryScope,
    *,
    depth: int,
    fan_out: int,
    workflow: WorkflowState | None = None,
    **task_fields: Any,
) -> list[TaskState]:
    """Create a task tree in ``store``: :meth:`TaskStateFactory.tree` without binding first."""
    return bind(store).tasks.tree(depth=depth, fan_out=fan_out, workflow=workflow, **task_fields)
