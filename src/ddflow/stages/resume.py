"""The resume-file protocol of a long job (distillation, an expert block): a state saved atomically every so often
beside the outputs, never a declared output (Snakemake deletes a failed job's outputs; the resume file survives), read
back by a rerun only when it was written for the same configuration (its `identity`), deleted once the outputs are
written. A corrupt file is moved aside (ddflow.io.load_resume); a file of another configuration is ignored."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..io import load_resume, save_pt

log = logging.getLogger(__name__)


class ResumeFile:
    """One job's resume file; every method does nothing when the job has none (`path` None)."""

    def __init__(self, path: str | Path | None, identity: dict[str, Any], what: str = "resume file"):
        self.path = Path(path) if path else None
        self.identity, self.what = identity, what

    def load(self) -> dict[str, Any] | None:
        """The saved state of this configuration, or None (start afresh)."""
        state = load_resume(self.path, self.what) if self.path is not None else None
        if state is not None and state.get("identity") != self.identity:
            log.warning("%s belongs to another configuration; starting afresh", self.path)
            return None
        return state

    def save(self, **state: Any) -> None:
        if self.path is not None:
            save_pt({"identity": self.identity, **state}, self.path)

    def remove(self) -> None:
        """After the outputs are written: the job is done, a rerun starts afresh."""
        if self.path is not None and self.path.exists():
            self.path.unlink()
