"""One undo list for the instance attributes that a context sets on a model.

Both patchers of the package use it: :meth:`ViTAdapter.trace` (block and
attention ``forward``, the embedding and head overrides) and the LRP engine
(leaf-module ``forward``). Like zennit's ``RemovableHandleList``: every
:meth:`InstancePatches.set` is recorded, and one :meth:`InstancePatches.undo`
reverts them all in reverse order.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, List, Optional, Tuple, Type

__all__ = ["InstancePatches"]

_MISSING = object()


class InstancePatches:
    """Instance attributes set for the duration of a context, then undone.

    An attribute the instance did not have is deleted again; one it had (the
    user's own instance ``forward``, say) is restored. Used as a context
    manager, the undo also runs when the body raised.

    Examples::

        >>> import torch
        >>> lin = torch.nn.Linear(2, 2)
        >>> with InstancePatches() as patches:
        ...     patches.set(lin, "forward", lambda x: 2 * x)
        >>> "forward" in lin.__dict__
        False
    """

    def __init__(self) -> None:
        self._saved: List[Tuple[Any, str, Any]] = []

    def set(self, obj: Any, name: str, value: Any) -> None:
        """Set ``obj.name = value`` (on the instance), recording how to undo it."""
        self._saved.append((obj, name, obj.__dict__.get(name, _MISSING)))
        setattr(obj, name, value)

    def has(self, obj: Any, name: str) -> bool:
        """Whether ``obj.name`` was already set through this list."""
        return any(o is obj and n == name for o, n, _ in self._saved)

    def undo(self) -> None:
        """Revert every :meth:`set`, last first."""
        while self._saved:
            obj, name, old = self._saved.pop()
            if old is _MISSING:
                obj.__dict__.pop(name, None)
            else:
                setattr(obj, name, old)

    def __enter__(self) -> InstancePatches:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.undo()
