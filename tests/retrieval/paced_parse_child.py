"""The parse worker, sending each batch of blocks after the first only once the test lets it go.

Run by tests/retrieval/test_big_text.py in place of ``retrieval.parse_child`` (``parse_worker.CHILD``):
a batch is then certain not to have come yet when the parent starts waiting for it, whatever the
machine's speed. The test lets the worker go by creating ``$RAGTUNE_TEST_GO``, which the worker
removes as it sends the batch.
"""

import os
import sys
import time
from pathlib import Path

import retrieval.parse_child as child

_real_send = child._send
_batches_sent = 0


def _send(channel, message: dict) -> None:
    global _batches_sent
    if "blocks" in message:
        _batches_sent += 1
        if _batches_sent > 1:
            go = Path(os.environ["RAGTUNE_TEST_GO"])
            while not go.exists():
                time.sleep(0.005)
            go.unlink()
    _real_send(channel, message)


child._send = _send

if __name__ == "__main__":
    child.main(sys.argv[1:])
