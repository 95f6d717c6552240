"""Background projections (analysis.projection_jobs): a job runs in the worker thread with progress, lands
in the on-disk cache, is not run twice, and a failure is kept with its one-line error."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.cache import entry_path
from analysis.embeddings import Embeddings
from analysis.projection_jobs import ProjectionJob, ProjectionJobs
from analysis.projections import project, projection_key
from stdcl.errors import ConfigError


def _embeddings(n_per: int = 40, k: int = 4, key: str = "jobs-test") -> Embeddings:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(k), n_per)
    X = (rng.normal(size=(k, 16))[y] * 6 + rng.normal(size=(len(y), 16))).astype(np.float32)
    return Embeddings({"spatial": X, "temporal": X[:, ::-1].copy()}, np.zeros((len(y), k), np.float32), y,
                      [f"s{i}" for i in range(len(y))], np.arange(len(y)), [f"c{j}" for j in range(k)], None,
                      "pooled", key)


def test_a_job_runs_in_the_background_reports_progress_and_is_cached(tmp_path):
    emb = _embeddings()
    jobs = ProjectionJobs()
    job = jobs.submit(emb, "spatial", "tsne", cache_root=tmp_path, seed=0)
    assert job.key == projection_key(emb.key, "spatial", "tsne", seed=0) and job.n == len(emb)
    assert jobs.submit(emb, "spatial", "tsne", cache_root=tmp_path, seed=0) is job  # queued once
    assert job.wait(120) and job.state == "done" and job.error is None
    np.testing.assert_array_equal(job.result(), project(emb.space("spatial"), "tsne", seed=0))
    assert job.fraction == 1.0 and job.started is not None and job.finished >= job.started
    assert entry_path("projections", job.key, tmp_path).is_file()
    assert not jobs.pending() and jobs.get(job.key) is job

    # another queue (a restarted server) finds it in the cache: finished at once, nothing run
    again = ProjectionJobs().submit(emb, "spatial", "tsne", cache_root=tmp_path, seed=0)
    assert again.done and again.started is None
    np.testing.assert_array_equal(again.result(), job.result())


def test_jobs_run_one_at_a_time_in_submission_order(tmp_path):
    emb = _embeddings(n_per=60)
    jobs = ProjectionJobs()
    first = jobs.submit(emb, "spatial", "tsne", cache_root=tmp_path, seed=0)
    second = jobs.submit(emb, "temporal", "tsne", cache_root=tmp_path, seed=0)
    assert second.state in ("queued", "running") and second.seconds_left() is None  # one job at a time
    assert set(jobs.pending()) <= {first, second}
    assert second.wait(120) and first.done  # run in submission order
    assert second.stage == "done" and second.fraction == 1.0


def test_a_failed_job_keeps_its_error(tmp_path):
    tiny = _embeddings(n_per=1, k=3, key="tiny")  # 3 samples: t-SNE needs 4
    job = ProjectionJobs().submit(tiny, "spatial", "tsne", cache_root=tmp_path)
    assert job.wait(60) and job.state == "failed"
    with pytest.raises(ConfigError, match="tsne needs at least 4 samples, got 3"):
        job.result()
    assert not entry_path("projections", job.key, tmp_path).exists()


def test_unfinished_job_has_no_result():
    job = ProjectionJob("k", "spatial", "umap", 10)
    with pytest.raises(RuntimeError, match="queued"):
        job.result()
    job.state, job.started, job.fraction = "running", 0.0, 0.5
    assert job.seconds_left() is not None and job.seconds_left() > 0
