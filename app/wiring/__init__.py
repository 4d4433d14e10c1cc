"""The composition root of the jobs: every long operation, assembled where every layer may be imported.

``OPERATIONS`` is the one registry of operations (ingest, index, synth, train, eval, next round). The core
(``ragtune.operations``) runs whatever registry it is handed and never names a module: a job
record keeps the operation's kind, and the job process, ``python -m app.jobs_entry``, looks that
kind up here. The CLI, the builder app and the deploy upload route start, run and resume
operations through ``OPERATIONS``.
"""

from __future__ import annotations

from app.next_round import NEXT_ROUND
from app.training_data import SYNTH
from evaluation.service import EVAL
from ragtune.operations import OperationRegistry
from retrieval.service import INDEX, INGEST, upload_pipeline
from training.jobs import TRAIN

JOB_ENTRY = "app.jobs_entry"  # the module a job process runs; its main() is OPERATIONS.main

OPERATIONS = OperationRegistry([INGEST, INDEX, SYNTH, TRAIN, EVAL, NEXT_ROUND], entry=JOB_ENTRY)


def deploy_uploads():
    """``start_ingest`` for the assistant server's builder upload route: an ingest job of ``OPERATIONS``."""
    return upload_pipeline(OPERATIONS)
