"""Where ragtune keeps things on disk. Every location can be moved by an environment variable."""

import os
from pathlib import Path


def home() -> Path:
    """Root for workspaces and user data (RAGTUNE_HOME, default ~/.ragtune)."""
    return Path(os.environ.get("RAGTUNE_HOME", Path.home() / ".ragtune")).expanduser()


def cache_dir() -> Path:
    """Converted models and other rebuildable artefacts (RAGTUNE_CACHE, default ~/.cache/ragtune)."""
    return Path(os.environ.get("RAGTUNE_CACHE", Path.home() / ".cache" / "ragtune")).expanduser()


def workspaces_root() -> Path:
    return Path(os.environ.get("RAGTUNE_WORKSPACES", home() / "workspaces")).expanduser()


def repo_datasets_dir() -> Path:
    """The sample data shipped in the source tree (datasets/ beside this package)."""
    return Path(__file__).resolve().parent.parent / "datasets"
