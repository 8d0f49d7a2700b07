"""Atomic writes, and one way to report a write that fails.

Every file that another stage reads is written to a temporary file in the same folder, flushed,
then renamed over the target, so a crash leaves either the old file or the new one, never half of
one. A write that fails because of where it goes (no permission, a read-only or full disk, a
folder where the file should be, a path through a file) becomes one :class:`WriteError`:
``cannot write <path>: <reason>``, which the CLI prints as one ``error:`` line (exit code 2), with
the temporary file removed and the previous file, if any, untouched.

This is the one module for atomic writes: import these names from here.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from odmaug.errors import OdmaugError

try:
    from safetensors import SafetensorError
except ImportError:  # pragma: no cover - safetensors is a dependency; keep this module importable
    SafetensorError = OSError

# OSErrors that say the destination cannot take the file. Others raised inside a writer (a
# download's network error is an OSError too) are not about the destination and pass unchanged.
DESTINATION_ERRNOS = frozenset({
    errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EISDIR,
    errno.ENOTDIR, errno.EEXIST, errno.ENOENT, errno.EIO, errno.ENAMETOOLONG,
})


class WriteError(OdmaugError, OSError):
    """An output could not be written: ``cannot write <path>: <reason>``.

    Also an ``OSError`` (with ``errno``, ``strerror`` and ``filename``), so a caller that tolerates a
    failed write, such as a feature cache on a read-only disk, keeps tolerating it.
    """

    def __init__(self, path: str | Path, reason: str, code: int | None = None) -> None:
        super().__init__(f"cannot write {path}: {reason}")
        self.errno, self.strerror, self.filename = code, reason, str(path)

    def __str__(self) -> str:  # the one line, not OSError's "[Errno n] ..." form
        return str(self.args[0])


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    text = (str(err).splitlines() or [type(err).__name__])[0]
    # safetensors wraps the OS error: 'IoError(Os { code: 28, ..., message: "No space left on device" })'
    found = re.search(r'message: "([^"]+)"', text)
    return found.group(1) if found else text


def _first_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (a file, where the path runs through one)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(target: str | Path, *, folder: bool = False, need_bytes: int = 0) -> Path:
    """Fail fast, before long work, when ``target`` (a file; a folder with ``folder=True``) cannot be written.

    Creates nothing. Refuses a folder where a file goes (or a file where a folder goes), a path
    through a file, a nearest existing folder without write permission, and, with ``need_bytes``,
    too little free space there. Root ignores permission bits, so a write can still fail later:
    :func:`atomic_path` reports that the same way.

    Raises:
        WriteError: ``cannot write <target>: <reason>``.
    """
    target = Path(target)
    if target.exists() and target.is_dir() != folder:
        raise WriteError(target, "it is a file, not a folder" if folder else "it is a folder", errno.EEXIST)
    existing = _first_existing(target if folder else target.parent)
    if not existing.is_dir():
        raise WriteError(target, f"{existing} is a file, not a folder", errno.ENOTDIR)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise WriteError(target, f"no permission to write in {existing}", errno.EACCES)
    if need_bytes and (free := shutil.disk_usage(existing).free) < need_bytes:
        raise WriteError(target, f"{free / 2**20:.0f} MiB free, about {need_bytes / 2**20:.0f} MiB needed", errno.ENOSPC)
    return target


def _make_temporary(target: Path) -> Path:
    if target.is_dir():
        raise WriteError(target, "it is a folder", errno.EISDIR)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as err:
        blocker = _first_existing(target.parent)
        if err.errno in (errno.ENOTDIR, errno.EEXIST) and not blocker.is_dir():
            raise WriteError(target, f"{blocker} is a file, not a folder", err.errno) from None
        raise WriteError(target, _reason(err), err.errno) from None
    try:
        # mkstemp makes the file 0600; the renamed file must be readable as any new file would
        # be (reports and manifests on a shared machine), so it gets the umask's mode.
        if hasattr(os, "fchmod"):  # POSIX; Windows has no such modes
            os.fchmod(fd, 0o666 & ~current_umask())
    except OSError:
        pass  # a file system without modes (some network mounts): mkstemp's 0600 stays
    finally:
        os.close(fd)
    return Path(tmp)


def current_umask() -> int:
    """The process umask, read without changing it where Linux reports it (no window in which
    another thread would create files with a umask of 0); else set and restored at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success it is renamed over ``target``.

    Use for writers that want a path (``save_file``, ``Image.save``, ``DataFrame.to_csv``). On an
    exception the temporary file is removed and ``target`` is untouched; a failure of the write
    itself (see the module docstring) is raised as :class:`WriteError`.
    """
    target = Path(target)
    tmp_path = _make_temporary(target)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    except (OSError, SafetensorError) as err:
        if isinstance(err, OdmaugError) or (isinstance(err, OSError) and err.errno not in DESTINATION_ERRNOS):
            raise
        raise WriteError(target, _reason(err), getattr(err, "errno", errno.EIO)) from None
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_bytes(target: str | Path, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``target`` atomically."""
    atomic_write_text(target, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
