"""Model replicas and the job table of the visualiser's server.

A traced forward sets instance attributes on the model's modules for its
duration (see :meth:`captum_vit.adapters.ViTAdapter.trace`), so one model
instance must never run two explanations at once. :class:`ReplicaPool` holds
a few copies of each model; a request checks one out for the time of its
computation. Long computations (scores) run as jobs on a small thread pool
that is one smaller than the number of replicas, so at least one replica is
always left for interactive requests: a long job never blocks the page.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import queue
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterator, List, Optional

from torch import nn


class Busy(RuntimeError):
    """No model replica became free in time."""


class ReplicaPool:
    """Copies of one model that requests check out one at a time.

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
            raise Busy(f"the model stayed busy for {timeout} s; try again") from None
        try:
            yield model
        finally:
            self._free.put(model)


class Job:
    """One long computation: state, progress and result, read by polling."""

    def __init__(self, kind: str, total: int) -> None:
        self.id = uuid.uuid4().hex
        self.kind = kind
        self.state = "queued"
        self.total = max(1, int(total))
        self.done = 0
        self.message = "queued"
        self.result: Any = None
        self.error: Optional[str] = None
        self.created = time.time()
        self.finished: Optional[float] = None
        self._lock = threading.Lock()

    def step(self, message: str) -> None:
        """Record one finished unit of work."""
        with self._lock:
            self.done = min(self.total, self.done + 1)
            self.message = message

    def to_dict(self) -> Dict[str, Any]:
        with self._lock:
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
                "elapsed": (self.finished or time.time()) - self.created,
            }


class JobTable:
    """Runs jobs on a thread pool and keeps the last ``keep`` of them.

    Args:
        workers (int, optional): threads running jobs. Default: 1
        keep (int, optional): jobs remembered (the oldest finished ones are
            forgotten first). Default: 64
        error_message (callable, optional): maps an exception raised by a job
            to the message shown to the user. Default: ``str``
    """

    def __init__(
        self,
        workers: int = 1,
        keep: int = 64,
        error_message: Callable[[BaseException], str] = str,
    ) -> None:
        self._pool = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="captum-vit-job"
        )
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._keep = keep
        self._error_message = error_message
        self._counter = itertools.count()

    def submit(self, kind: str, total: int, fn: Callable[[Job], Any]) -> Job:
        """Queue ``fn(job)``; its return value becomes ``job.result``."""
        job = Job(kind, total)
        with self._lock:
            self._jobs[job.id] = job
            self._evict()

        def run() -> None:
            job.state, job.message = "running", "running"
            try:
                result = fn(job)
            except Exception as e:  # reported to the page, never raised
                job.error = self._error_message(e)
                job.state, job.message = "error", job.error
            else:
                job.result = result
                job.done = job.total
                job.state, job.message = "done", "done"
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
                if job.state in ("done", "error"):
                    del self._jobs[jid]
                    break
            else:
                return

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
