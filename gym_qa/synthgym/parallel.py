"""Render jobs on several processes: the one way SynthGym's generators (clips, routines) fan work out."""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from typing import Any

from tqdm import tqdm


def _one_thread() -> None:
    # One thread per process: the parallelism is across jobs.
    os.environ["OMP_NUM_THREADS"] = "1"


def run_jobs(
    work: Callable[[Any], dict], jobs: Sequence[Any], workers: int, bar: tqdm, chunksize: int = 1
) -> list[dict]:
    """``work(job)`` for every job, on ``workers`` processes (1: in this one), ticking ``bar``. The records
    come back in completion order: each job depends only on its arguments, so callers sort them."""
    records: list[dict] = []
    if workers == 1:
        for job in jobs:
            records.append(work(job))
            bar.update()
        return records
    # fork keeps start-up cheap
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    with ctx.Pool(workers, initializer=_one_thread) as pool:
        for record in pool.imap_unordered(work, jobs, chunksize=chunksize):
            records.append(record)
            bar.update()
    return records
