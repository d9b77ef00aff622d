"""Where an export is written before it replaces the last one, so readers never see half of it.

The staging folder sits beside the output and carries the writing process's pid and origin (host
boot and pid namespace, harvester.workers.origin) in its name: an export killed outright (kill -9,
the OOM killer) cannot remove its own, so the next export of the same origin removes those whose
process is gone. Folders of live exports, or of other hosts (a shared disk), are left alone.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from ..workers import origin, pid_gone
from .target import Protected, previous_export

_RANDOM_TAIL = re.compile(r"-[a-z0-9_]+$")  # what mkdtemp appends


def umask() -> int:
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_staging(out: Path) -> Path:
    """An empty folder beside `out`, after removing the ones abandoned by dead exports."""
    out.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{out.name}-staging-"
    here = hashlib.sha256(origin().encode()).hexdigest()[:12]
    for folder in out.parent.glob(f"{glob.escape(prefix)}*"):
        pid, _, where = _RANDOM_TAIL.sub("", folder.name[len(prefix):]).partition("@")
        if folder.is_dir() and where == here and pid.isdigit() and pid_gone(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}@{here}-", dir=out.parent))
    # mkdtemp makes it 0700; the export is for a trainer that may run as another user: the umask decides
    staging.chmod(0o777 & ~umask())
    return staging


def swap_in(staging: Path, out: Path, job: str, protected: Iterable[Protected] = ()) -> None:
    """Replace `out` by `staging` (two renames; `out` is missing only between them), if `out` may be
    replaced (see harvester.export.target: checked again here, as the folder may have changed since)."""
    previous_export(out, job, protected)
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}-old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
    staging.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
