"""The job process of every operation: ``python -m app.jobs_entry --operation KIND ...``.

``OPERATIONS.start``/``resume`` (``app.wiring``) start it; it runs the operation of that kind from
the same registry, so the core never loads a module by name.
"""

from app.wiring import OPERATIONS

if __name__ == "__main__":
    OPERATIONS.main()
