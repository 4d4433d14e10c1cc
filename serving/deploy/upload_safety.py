"""Moved to :mod:`ragtune.ingest_gate`, the one gate shared by the CLI, the builder app and this server.

Kept so that existing imports keep working.
"""

from ragtune.ingest_gate import (  # noqa: F401
    DEFAULT_EXTENSIONS, MB, TEXT_EXTENSIONS, ZIP_EXTENSIONS, CheckedFile, UploadLimits, check_batch, check_file,
    read_limited, safe_filename, stage_files,
)
