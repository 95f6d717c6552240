"""Projections computed in the background, one at a time, with progress: a page submits one, draws
something else meanwhile (e.g. PCA) and polls the job until its coordinates are there.

:class:`ProjectionJobs` is a queue served by one worker thread. A job computes
:func:`analysis.projections.project_embeddings`, so its result lands in the on-disk cache like any
projection and is computed once; a projection already in the cache is a finished job at once.
A thread (not a process) shares the server's compiled UMAP code (:func:`~analysis.projections.warm_up_umap`)
and its memory; numba's layout epochs and BLAS leave the interpreter to the server between calls,
so pages stay responsive (measured: UMAP of 20,000 points in a thread delayed the main thread by
at most 0.2 s at a time on a loaded 2-core machine).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.projections import (
    cached_projection,
    project_embeddings,
    projection_key,
    umap_ready,
    warm_up_umap,
)

#: How a job's ``state`` reads.
STATES = ("queued", "running", "done", "failed")


@dataclass(eq=False)
class ProjectionJob:
    """One projection: its cache key, what it projects, where it is, and its result or error."""

    key: str
    space: str
    method: str
    n: int
    state: str = "queued"
    fraction: float = 0.0
    stage: str = "waiting for the projections queued before it"
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None
    coords: np.ndarray | None = None
    error: BaseException | None = None
    _event: threading.Event = field(default_factory=threading.Event, repr=False)
    _task: tuple | None = field(default=None, repr=False)  # (embeddings, params, cache root) until it runs

    @property
    def done(self) -> bool:
        """Finished, with coordinates or an error."""
        return self.state in ("done", "failed")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job is finished (or ``timeout`` seconds); returns whether it is."""
        return self._event.wait(timeout)

    def seconds_left(self) -> float | None:
        """A linear estimate from the time spent and the fraction done (None until 5 % is done)."""
        if self.state != "running" or self.started is None or self.fraction < 0.05:
            return None
        spent = time.monotonic() - self.started
        return spent / self.fraction * (1.0 - self.fraction)

    def result(self) -> np.ndarray:
        """The ``(N, 2)`` coordinates; raises the job's error when it failed (and RuntimeError before the end)."""
        if self.state == "failed":
            raise self.error  # type: ignore[misc]
        if self.coords is None:
            raise RuntimeError(f"projection {self.key} is {self.state}")
        return self.coords

    def _report(self, fraction: float, stage: str) -> None:
        self.fraction = max(self.fraction, min(float(fraction), 1.0))
        self.stage = stage

    def _finish(self, coords: np.ndarray | None = None, error: BaseException | None = None) -> None:
        self.coords, self.error = coords, error
        self.state = "failed" if error is not None else "done"
        self.fraction = 1.0 if error is None else self.fraction
        self.stage = "failed" if error is not None else "done"
        self.finished = time.monotonic()
        self._task = None
        self._event.set()


class ProjectionJobs:
    """Background projections keyed by their cache key; one worker thread, started on the first job.

    ``max_kept`` finished jobs stay in memory (the oldest are dropped; their results stay on disk).
    """

    def __init__(self, max_kept: int = 64):
        self.max_kept = int(max_kept)
        self._jobs: OrderedDict[str, ProjectionJob] = OrderedDict()
        self._queue: queue.Queue[ProjectionJob] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, emb: Any, space: str, method: str = "umap", *,
               cache_root: str | os.PathLike | None = None, **params: Any) -> ProjectionJob:
        """The job projecting ``space`` of ``emb`` by ``method`` (``params``: :func:`project`'s), queued
        unless it is known already: running, finished, or in the cache (then finished at once).
        A failed job is returned as it is (the same input would fail again)."""
        key = projection_key(emb.key, space, method, **params)
        with self._lock:
            job = self._jobs.get(key)
            if job is not None:
                self._jobs.move_to_end(key)
                return job
        coords = cached_projection(emb, space, method, cache_root=cache_root, **params)
        with self._lock:
            job = self._jobs.get(key)
            if job is None:
                job = ProjectionJob(key, space, method, len(emb))
                if coords is not None:
                    job._finish(coords)
                else:
                    job._task = (emb, dict(params), cache_root)
                    self._queue.put(job)
                    self._ensure_worker()
                self._jobs[key] = job
                self._trim()
            return job

    def get(self, key: str) -> ProjectionJob | None:
        """The job with cache key ``key``, if this queue knows it."""
        with self._lock:
            return self._jobs.get(key)

    def pending(self) -> list[ProjectionJob]:
        """Queued and running jobs, in submission order."""
        with self._lock:
            return [j for j in self._jobs.values() if not j.done]

    def _ensure_worker(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name="projection-jobs", daemon=True)
            self._thread.start()

    def _trim(self) -> None:
        finished = [k for k, j in self._jobs.items() if j.done]
        for k in finished[:max(0, len(finished) - self.max_kept)]:
            del self._jobs[k]

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            emb, params, root = job._task
            job.state, job.started = "running", time.monotonic()
            try:
                if job.method == "umap" and not umap_ready():
                    job._report(0.0, "compiling UMAP's code (once per server)")
                    warm_up_umap()
                coords = project_embeddings(emb, job.space, job.method, cache_root=root, progress=job._report,
                                            **params)
            except BaseException as e:  # the page shows it (a one-line error, or the traceback of a bug)
                job._finish(error=e)
            else:
                job._finish(coords)
            finally:
                self._queue.task_done()
