"""Temporary changes to a model, serialised per model and undone on exit.

Every change captum_vit makes to a user's model is an instance attribute set
for the duration of a context (an explicit ``forward`` on a block, the
attention, a leaf module; timm's ``_pos_embed``/``forward_head``) and removed
again on exit. :func:`patching` is the one place that does it:

* it holds the model's re-entrant lock (:func:`model_lock`) for the whole
  context, so two threads never change the same model at once and a thread's
  traced forward never runs through another thread's tracer;
* every attribute it sets routes calls from any thread other than the one that
  opened the context to the code that was there before (the class's own
  function, or the user's instance attribute): a plain ``model(x)`` from
  another thread runs the stock model while an explanation is in progress,
  without waiting for it;
* on exit, also when the body raised, every attribute is removed again (the
  user's own restored), in reverse order.

The locks live in a :class:`weakref.WeakKeyDictionary` keyed by the model:
nothing is written onto the model and a lock disappears with its model.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Any, Callable, Iterator, List, Set, Tuple

from torch import nn

__all__ = ["model_lock", "patching", "Patcher"]

_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = (
    weakref.WeakKeyDictionary()
)
_LOCKS_GUARD = threading.Lock()
_MISSING = object()


def model_lock(model: nn.Module) -> threading.RLock:
    """The re-entrant lock that serialises every change captum_vit makes to
    ``model``.

    captum_vit holds it while an explanation has temporary forwards on the
    model (see :func:`patching`). Hold it yourself around code that must not
    see those forwards, e.g. ``torch.save(model)`` or ``copy.deepcopy(model)``
    while other threads explain the same model.

    Args:
        model (torch.nn.Module): the model (for a wrapped model, the module
            the adapter explains: ``adapters.get(model).model``).

    Returns:
        threading.RLock: the same lock for the same model, in every thread.

    Examples::

        >>> with model_lock(model):
        ...     torch.save(model, "model.pt")
    """
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


class Patcher:
    """Sets instance attributes for one :func:`patching` context and undoes
    them. Create it through :func:`patching`, not directly."""

    def __init__(self) -> None:
        self._owner = threading.get_ident()
        self._undo: List[Tuple[Any, str, Any]] = []
        self._seen: Set[Tuple[int, str]] = set()

    def set(self, obj: Any, name: str, fn: Callable[..., Any]) -> bool:
        """Make ``obj.name`` call ``fn`` in the owning thread until exit.

        Calls from other threads go to what ``obj.name`` was before: the
        user's instance attribute if there was one, else the class's.
        Setting the same attribute of the same object twice in one context
        keeps the first; returns whether ``fn`` was set.
        """
        if (id(obj), name) in self._seen:
            return False
        self._seen.add((id(obj), name))
        old = obj.__dict__.get(name, _MISSING)
        if old is _MISSING:
            stock = getattr(type(obj), name).__get__(obj, type(obj))
        else:
            stock = old
        owner = self._owner

        def routed(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() == owner:
                return fn(*args, **kwargs)
            return stock(*args, **kwargs)

        self._undo.append((obj, name, old))
        setattr(obj, name, routed)
        return True

    def restore(self) -> None:
        """Remove every attribute set (the user's own restored), newest first."""
        while self._undo:
            obj, name, old = self._undo.pop()
            if old is _MISSING:
                obj.__dict__.pop(name, None)
            else:
                setattr(obj, name, old)
        self._seen.clear()


@contextlib.contextmanager
def patching(model: nn.Module) -> Iterator[Patcher]:
    """Hold ``model``'s lock and undo every :meth:`Patcher.set` on exit.

    Args:
        model (torch.nn.Module): the model whose lock is held (the objects
            patched are ``model`` or its submodules).

    Yields:
        Patcher: sets the temporary attributes.
    """
    with model_lock(model):
        patcher = Patcher()
        try:
            yield patcher
        finally:
            patcher.restore()
