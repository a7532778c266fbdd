"""A base for the objects that a ``with`` block closes."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class ClosedOnExit:
    """``with obj:`` gives ``obj`` and calls ``obj.close()`` however the block ends."""

    def close(self) -> None:
        """Release what the object holds."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
