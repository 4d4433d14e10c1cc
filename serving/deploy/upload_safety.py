"""The deploy server's upload checks: the ingest gate of :mod:`ragtune.ingest_gate`, shared with the CLI and the builder app.

The upload route screens names, sizes, counts, PDFs and archive bombs here before anything is staged;
the document pipeline passed to the server (``ingest_paths(..., all_or_nothing=True)``) runs the same
gate again on the staged files and stores all of them or none.
"""

from ragtune.ingest_gate import (  # noqa: F401
    DEFAULT_EXTENSIONS, MB, TEXT_EXTENSIONS, ZIP_EXTENSIONS, CheckedFile, UploadLimits, check_batch, check_file,
    read_limited, safe_filename, stage_files,
)
