"""Model replicas, interruptible computations and the job table of the visualiser.

A traced forward sets instance attributes on the model's modules for its
duration (see :mod:`captum_vit.attr`), so one model instance must never run
two explanations at once. :class:`ReplicaPool` holds a few copies of each
model; a computation checks one out for its duration. Long computations
(scores) run as jobs on a small thread pool that is one smaller than the number
of replicas, so at least one replica is always left for interactive requests.

Every computation of the server carries a :class:`Budget`: a deadline, and
optionally a test of whether its client is still there. While such
computations run, one global forward pre-hook (``torch.nn.modules.module.
register_module_forward_pre_hook``, installed by the first and removed by the
last: :func:`interruption_hook`) checks the budget of the computation running
in the current thread before each module call, so a method stops at its next
module call once its time is up or its client has gone (a method that spends
its time outside module calls, such as AttentionFlow's max-flow, runs to its
end). The exception unwinds through the method, which restores the model, and
the replica returns to its pool. Threads that run no computation of the
visualiser (a notebook using the same model) are never interrupted.
"""

from __future__ import annotations

import contextlib
import copy
import queue
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterator, List, Optional

from torch import nn

from ._errors import Busy, InsightsError, Interrupted, describe


class ReplicaPool:
    """Copies of one model that computations check out one at a time.

    Args:
        model (torch.nn.Module): the model; it is replica 0 itself.
        replicas (int, optional): number of replicas (``replicas - 1`` deep
            copies are made). Default: 2
    """

    def __init__(self, model: nn.Module, replicas: int = 2) -> None:
        if replicas < 1:
            raise ValueError(f"replicas must be at least 1, got {replicas}")
        self._free: queue.Queue[nn.Module] = queue.Queue()
        self._free.put(model)
        for _ in range(replicas - 1):
            self._free.put(copy.deepcopy(model))
        self.size = replicas

    @contextlib.contextmanager
    def checkout(self, timeout: Optional[float] = None) -> Iterator[nn.Module]:
        """Borrow a replica for the body of the ``with`` statement.

        Raises:
            Busy: none became free within ``timeout`` seconds.
        """
        try:
            model = self._free.get(timeout=timeout)
        except queue.Empty:
            raise Busy(
                f"the model stayed busy for {timeout:.0f} s; try again"
            ) from None
        try:
            yield model
        finally:
            self._free.put(model)

    def free(self) -> int:
        """Replicas not checked out right now."""
        return self._free.qsize()


class Budget:
    r"""When a computation must stop: a deadline, a cancel flag, a gone client.

    Args:
        seconds (float, optional): time allowed from now. Default: None (none)
        gone (callable, optional): returns True once the client no longer
            waits for the result (polled at most every ``poll`` seconds).
            Default: None
        poll (float, optional): seconds between two calls of ``gone``.
            Default: 0.25
    """

    def __init__(
        self,
        seconds: Optional[float] = None,
        gone: Optional[Callable[[], bool]] = None,
        poll: float = 0.25,
    ) -> None:
        self.seconds = seconds
        self.deadline = None if seconds is None else time.monotonic() + seconds
        self._gone = gone
        self._poll = poll
        self._next_poll = 0.0
        self._cancelled: Optional[str] = None

    def restart(self) -> None:
        """Count the time allowed from now (a job's budget starts when it runs)."""
        if self.seconds is not None:
            self.deadline = time.monotonic() + self.seconds

    def cancel(self, message: str = "cancelled") -> None:
        """Stop the computation at its next check."""
        self._cancelled = message

    @property
    def cancelled(self) -> bool:
        return self._cancelled is not None

    def remaining(self) -> Optional[float]:
        """Seconds left (at least 0), or None without a deadline."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    def check(self) -> None:
        """Raise :class:`Interrupted` when the computation must stop."""
        if self._cancelled is not None:
            raise Interrupted("cancelled", self._cancelled)
        now = time.monotonic()
        if self.deadline is not None and now > self.deadline:
            raise Interrupted(
                "timeout",
                f"the computation ran past its time budget of {self.seconds:g} s; "
                "choose fewer methods or smaller parameters",
            )
        if self._gone is not None and now >= self._next_poll:
            self._next_poll = now + self._poll
            if self._gone():
                self._cancelled = "the client went away"
                raise Interrupted("cancelled", self._cancelled)


_local = threading.local()
_hook_lock = threading.Lock()
_hook_users = 0
_hook_handle: Any = None


def _check_current(module: nn.Module, args: Any) -> None:
    budget = getattr(_local, "budget", None)
    if budget is not None:
        budget.check()


@contextlib.contextmanager
def interruption_hook() -> Iterator[None]:
    """Install the global pre-hook checking each computation's :class:`Budget`
    (reference-counted: nested and concurrent servers share one hook)."""
    global _hook_users, _hook_handle
    from torch.nn.modules.module import register_module_forward_pre_hook

    with _hook_lock:
        if _hook_users == 0:
            _hook_handle = register_module_forward_pre_hook(_check_current)
        _hook_users += 1
    try:
        yield
    finally:
        with _hook_lock:
            _hook_users -= 1
            if _hook_users == 0:
                _hook_handle.remove()
                _hook_handle = None


@contextlib.contextmanager
def running_under(budget: Optional[Budget]) -> Iterator[None]:
    """Check ``budget`` before every module call this thread makes in the
    body (through :func:`interruption_hook`); None checks nothing."""
    previous = getattr(_local, "budget", None)
    _local.budget = budget
    try:
        if budget is None:
            yield
        else:
            with interruption_hook():
                budget.check()
                yield
    finally:
        _local.budget = previous


class Job:
    """One long computation: state, progress and result, read by polling."""

    def __init__(self, kind: str, total: int, budget: Budget) -> None:
        self.id = uuid.uuid4().hex
        self.kind = kind
        self.state = "queued"
        self.total = max(1, int(total))
        self.done = 0
        self.message = "queued"
        self.result: Any = None
        self.error: Optional[str] = None
        self.error_code: Optional[str] = None
        self.created = time.time()
        self.finished: Optional[float] = None
        self.last_seen = time.monotonic()
        self.budget = budget
        self._lock = threading.Lock()

    def step(self, message: str) -> None:
        """Record one finished unit of work."""
        with self._lock:
            self.done = min(self.total, self.done + 1)
            self.message = message

    def cancel(self) -> None:
        """Stop the job at its next module call (or before it starts)."""
        self.budget.cancel("cancelled by the client")

    def to_dict(self) -> Dict[str, Any]:
        """The job as the page polls it (also marks it as still wanted)."""
        with self._lock:
            self.last_seen = time.monotonic()
            return {
                "id": self.id,
                "kind": self.kind,
                "state": self.state,
                "progress": self.done / self.total,
                "done": self.done,
                "total": self.total,
                "message": self.message,
                "result": self.result if self.state == "done" else None,
                "error": self.error,
                "error_code": self.error_code,
                "elapsed": (self.finished or time.time()) - self.created,
            }


class JobTable:
    """Runs jobs on a thread pool and keeps the last ``keep`` of them.

    A job that nobody polls for ``abandon_after`` seconds is cancelled: the
    page that started it has gone.

    Args:
        workers (int, optional): threads running jobs. Default: 1
        keep (int, optional): jobs remembered (the oldest finished ones are
            forgotten first). Default: 64
        abandon_after (float, optional): seconds without a poll after which a
            queued or running job is cancelled. Default: 30
    """

    def __init__(
        self, workers: int = 1, keep: int = 64, abandon_after: float = 30.0
    ) -> None:
        self._pool = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="captum-vit-job"
        )
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._keep = keep
        self.abandon_after = abandon_after

    def submit(
        self,
        kind: str,
        total: int,
        fn: Callable[[Job], Any],
        seconds: Optional[float] = None,
    ) -> Job:
        """Queue ``fn(job)``, run under a :class:`Budget` of ``seconds`` from
        its start; its return value becomes ``job.result``."""

        def abandoned() -> bool:
            return time.monotonic() - job.last_seen > self.abandon_after

        budget = Budget(seconds, gone=abandoned)
        job = Job(kind, total, budget)
        with self._lock:
            self._jobs[job.id] = job
            self._evict()

        def run() -> None:
            budget.restart()
            job.state, job.message = "running", "running"
            try:
                with running_under(budget):
                    result = fn(job)
            except Exception as e:  # reported to the page, never raised
                job.error = describe(e)
                job.error_code = (
                    e.code if isinstance(e, InsightsError) else "internal_error"
                )
                job.state = "cancelled" if job.error_code == "cancelled" else "error"
                job.message = job.error
            else:
                job.result = result
                job.done = job.total
                job.state, job.message = "done", "finished"
            job.finished = time.time()

        self._pool.submit(run)
        return job

    def get(self, job_id: str) -> Optional[Job]:
        with self._lock:
            return self._jobs.get(job_id)

    def jobs(self) -> List[Job]:
        with self._lock:
            return list(self._jobs.values())

    def _evict(self) -> None:
        while len(self._jobs) > self._keep:
            for jid, job in self._jobs.items():
                if job.state in ("done", "error", "cancelled"):
                    del self._jobs[jid]
                    break
            else:
                return

    def shutdown(self) -> None:
        for job in self.jobs():
            job.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
