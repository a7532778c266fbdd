"""The HTTP API (FastAPI): executions, users and API keys over a Store.

``create_app(store, engine=...)`` builds the app; ``compozy start`` serves it with uvicorn.
The app depends on :class:`ExecutionStarter`, not on the engine package, so it can be served
(and tested) without one.
"""

from compozy.api.app import create_app
from compozy.api.deps import ExecutionStarter

__all__ = ["ExecutionStarter", "create_app"]
