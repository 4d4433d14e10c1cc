"""The deploy server's upload checks: the ingest gate of :mod:`ragtune.ingest_gate`, shared with the CLI and the builder app.

The upload route screens names, sizes, counts, PDFs and archive bombs here before anything is staged
(in the workspace's staging area); the ingest job the route starts (``retrieval.service.upload_pipeline``)
runs the same gate again on the staged files, parses them in its limited worker, stores all of them or
none, and removes the staging folder when it ends.
"""

from ragtune.ingest_gate import (  # noqa: F401
    DEFAULT_EXTENSIONS, MB, TEXT_EXTENSIONS, ZIP_EXTENSIONS, CheckedFile, UploadLimits, check_batch, check_file,
    new_staging, read_limited, remove_staging, safe_filename, stage_files, sweep_staging,
)
