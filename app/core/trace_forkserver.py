"""Imported only by the trace pool's forkserver (``app.core.trace_pool.PRELOAD``): the tasks'
modules loaded and torch's one-off costs paid (``app.core.warmup``) once, in the process every
trace worker is forked from, so each worker, a replacement too, starts warm in milliseconds."""

import gc

import app.api.routes.models
import app.exports
import app.jobs.weights  # noqa: F401 (a job's export loads its trained module)
from app.core.warmup import warm_up

warm_up()

# Every object so far outside the collector's reach: a worker's first full collection would walk
# (and, copy-on-write, copy) the whole inherited heap, costing its second trace ~0.25 s.
gc.freeze()
