"""The parse worker with a parser that never returns on a file whose content starts with STALL.

Run by tests/retrieval/test_parse_worker.py in place of ``retrieval.parse_child`` (``parse_worker.CHILD``):
the time limit and a worker killed mid-file are then shown on a parse that is certain to still be
running, whatever the machine's speed. It touches ``$RAGTUNE_TEST_STALL_MARKER`` once it has stalled.
"""

import os
import sys
import threading
from pathlib import Path

import retrieval.parse_child as child

_real_stream_file = child.stream_file


def _stream_file(path, **options):
    with open(path, "rb") as f:
        stalls = f.read(5) == b"STALL"
    if stalls:
        marker = os.environ.get("RAGTUNE_TEST_STALL_MARKER")
        if marker:
            Path(marker).touch()
        threading.Event().wait()
    return _real_stream_file(path, **options)


child.stream_file = _stream_file

if __name__ == "__main__":
    child.main(sys.argv[1:])
