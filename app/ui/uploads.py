"""Files dropped on the app: moved out of Gradio's shared upload cache into a folder of their own, and
deleted once the job that reads them has read them (the Documents tab's drop zone, the Build tab's
training-file drop)."""

from __future__ import annotations

import os
import secrets
import threading
import time
from pathlib import Path

from ragtune.errors import BadInputError
from ragtune.jobs import JobStatus, get_job, list_jobs

from .common import log


def upload_folder() -> Path:
    """Where Gradio keeps the files dropped on the app ($GRADIO_TEMP_DIR, else <tmp>/gradio)."""
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder()).resolve()


def _inside(path, root: Path) -> Path | None:
    try:
        path = Path(path).resolve()
    except (OSError, RuntimeError):
        return None
    return path if root in path.parents else None


def _prune(folder: Path, root: Path) -> None:
    """Remove `folder` and its parents up to `root` while they are empty."""
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def stage_uploads(paths: list[Path]) -> list[Path]:
    """Move the dropped files out of Gradio's shared cache (where a file sits at a path named by its content,
    so two drops of one file share it) into a folder of this ingest's own, inside the same upload folder
    (a rename, nothing copied). Paths outside Gradio's folder are left as they are."""
    root = upload_folder()
    own = root / f"ragtune-ingest-{secrets.token_hex(8)}"
    staged = []
    for i, p in enumerate(paths):
        src = _inside(p, root)
        if src is None:
            staged.append(p)
            continue
        dest = own / str(i) / src.name
        try:
            dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.replace(src, dest)
        except OSError as exc:
            discard_uploads([*staged, *paths[i:]])
            if isinstance(exc, FileNotFoundError):
                raise BadInputError(f"The upload of {src.name} is gone from the app's cache; drop it again.") from None
            raise
        _prune(src.parent, root)
        staged.append(dest)
    return staged


def discard_uploads(paths) -> int:
    """Delete the files among `paths` that lie in Gradio's upload folder (and their emptied folders); a path
    anywhere else (a file named on the command line) is never touched. Returns how many went."""
    root, gone = upload_folder(), 0
    for p in paths:
        p = _inside(p, root)
        if p is None:
            continue
        try:
            p.unlink()
            gone += 1
        except FileNotFoundError:
            pass
        except OSError:
            continue
        _prune(p.parent, root)
    return gone


def job_uploads(job) -> list[str]:
    """The files a job was given: an ingest's paths, a training-set import's file."""
    config = (job.config or {}).get("config") or {}
    return [*config.get("paths", []), *([config["from_file"]] if config.get("from_file") else [])]


def discard_read_uploads(ws, job_id: str) -> int:
    """Once a job has read every file it was given (an ingest: each stored, already there or refused; a
    training-set import: the dataset written; either way the job succeeded), its uploads are deleted from
    Gradio's folder; the workspace keeps its own copy. A cancelled, stopped or failed job keeps them for Resume."""
    job = get_job(ws, job_id)
    return discard_uploads(job_uploads(job)) if job.status == JobStatus.SUCCEEDED else 0


def discard_superseded_uploads(ws, kind: str) -> None:
    """Uploads left by finished jobs of `kind`: those the app can no longer resume (a newer job of the kind is
    starting) and those that succeeded while no page followed them (the app had stopped)."""
    for job in list_jobs(ws, kind=kind):
        if job.finished:
            discard_uploads(job_uploads(job))


def discard_when_read(ws, job_id: str) -> None:
    """``discard_read_uploads`` once the job ends, from a thread: a page closed while the job runs leaves
    nothing behind in Gradio's folder."""
    def watch():
        try:
            while not get_job(ws, job_id).finished:
                time.sleep(0.5)
            discard_read_uploads(ws, job_id)
        except Exception:  # the workspace or job was deleted meanwhile: nothing to follow
            log.debug("upload cleanup for job %s stopped", job_id, exc_info=True)

    threading.Thread(target=watch, name=f"ragtune-uploads-{job_id}", daemon=True).start()
