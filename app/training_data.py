"""Training data for a fine-tune, made the same way by `ragtune synth` and the Build screen.

Generated from the workspace's documents (training.synth over retrieval's chunks: the app layer
joins the two areas) or imported from the user's file; either way a versioned dataset with
train / validation / test splits (``SynthConfig``'s fractions), so the test questions of an
uploaded file are kept aside for evaluation too.
"""

from __future__ import annotations

from ragtune.errors import BadInputError


def workspace_chunks(ws) -> list:
    try:
        from retrieval.documents import all_chunks
    except ImportError as exc:
        raise BadInputError(f"Document storage is not available ({exc}); ingest documents first.") from None
    return all_chunks(ws)


def dataset_from_documents(ws, config=None, progress=None, teacher=None):
    """A new dataset version of Q&A written from the workspace's documents."""
    from training.synth import SynthConfig, synthesize

    chunks = workspace_chunks(ws)
    if not chunks:
        raise BadInputError(f"Workspace '{ws.name}' has no documents: ingest documents first "
                            f"(`ragtune ingest PATH -w {ws.name}`), then run `ragtune synth -w {ws.name}`.")
    return synthesize(ws, (config or SynthConfig()).validate(), progress, chunks=chunks, teacher=teacher)


def dataset_from_file(ws, path, config=None):
    """A new dataset version from the user's chat JSONL / Q&A JSONL / CSV: (version, skipped lines)."""
    from training.dataset_store import import_chat_file
    from training.synth import SynthConfig

    config = (config or SynthConfig()).validate()
    return import_chat_file(ws, path, validation_fraction=config.validation_fraction,
                            test_fraction=config.test_fraction, seed=config.seed)
