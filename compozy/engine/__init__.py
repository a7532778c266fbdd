"""The workflow engine: YAML definitions, sandboxed templates, tools and the executor.

``load_definitions`` reads and validates workflow files; an ``Engine`` runs them against a
``Store``, persisting every task state change through the repositories.
"""

from compozy.engine.definitions import (
    DefinitionError,
    RetryPolicy,
    TaskDefinition,
    WorkflowDefinition,
    parse_definition,
)
from compozy.engine.engine import Engine, UnknownWorkflow
from compozy.engine.executor import ERROR_CODES, TaskCallback
from compozy.engine.loading import WorkflowCatalog, load_definition_file, load_definitions
from compozy.engine.tools import BUILTIN_TOOLS, ToolError, ToolResult

__all__ = [
    "BUILTIN_TOOLS",
    "ERROR_CODES",
    "DefinitionError",
    "Engine",
    "RetryPolicy",
    "TaskCallback",
    "TaskDefinition",
    "ToolError",
    "ToolResult",
    "UnknownWorkflow",
    "WorkflowCatalog",
    "WorkflowDefinition",
    "load_definition_file",
    "load_definitions",
    "parse_definition",
]
