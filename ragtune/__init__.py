"""ragtune's small shared core: paths, errors, atomic files, model registry, workspaces, jobs.

Everything else (retrieval, training, serving, evaluation, app) builds on this package;
this package imports none of them.
"""

__version__ = "0.1.0"
