"""One writer per output folder: a lock file that says who holds it.

Two ``augment`` runs into one folder at once produced a correct folder, but each generated every
missing image: twice the work. :class:`FolderLock` makes the second one stop at once with one line
naming the first (pid, host, start time). The lock is ``<out>/.odmaug.lock``, created atomically
(a fully written temporary file hard-linked to that name, which fails if it exists; ``O_EXCL``
where links are not supported) and removed on exit. A lock left by a process that died (kill -9,
a lost machine) names a pid that no longer runs on this host: it is taken over. One from another
host cannot be judged from here, so the message says how to remove it, unless the lock has a
lease (``lease_s``, the benchmark's stage jobs on a cluster): its holder renews it (:meth:`FolderLock.renew`)
and a lock not renewed for ``lease_s`` seconds is a dead holder's, whichever host it names.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Optional

from odmaug.errors import OdmaugError

LOCK_FILE = ".odmaug.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _holder(path: Path) -> Optional[dict[str, Any]]:
    """The lock's record, or None when it is gone; ``{}`` when unreadable (a torn or foreign file)."""
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def _stale(record: dict[str, Any], path: Optional[Path] = None) -> bool:
    """Whether ``record`` names a process of this host that is gone, or (a lock at ``path`` with a
    ``lease_s``) one whose holder has not renewed it for that long."""
    pid = record.get("pid")
    if record.get("host") == socket.gethostname() and isinstance(pid, int) and not _alive(pid):
        return True
    lease = record.get("lease_s")
    if path is None or not isinstance(lease, (int, float)):
        return False
    try:
        return time.time() - path.stat().st_mtime > lease
    except FileNotFoundError:
        return False


class FolderLock:
    """An exclusive lock on ``root`` for one command; :meth:`acquire`, then :meth:`release`.

    ``root`` (and missing parents) is made by :meth:`acquire` and removed again by :meth:`release`
    when nothing but the lock was put there, so a refused run leaves no empty folder behind.
    """

    def __init__(self, root: str | Path, command: str = "augment", lease_s: Optional[float] = None) -> None:
        self.root, self.path = Path(root), Path(root) / LOCK_FILE
        self.record = {"pid": os.getpid(), "host": socket.gethostname(),
                       "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command}
        if lease_s is not None:  # kept out of the record otherwise: augment's lock files stay as they were
            self.record["lease_s"] = lease_s
        self.made: list[Path] = []
        self.held = False

    def acquire(self) -> None:
        """Take the lock, or raise naming its holder.

        Raises:
            OdmaugError: another live process holds it (or one of another host, or an unreadable lock file).
        """
        missing = [p for p in (self.root, *self.root.parents) if not p.exists()]
        self.root.mkdir(parents=True, exist_ok=True)
        self.made = missing  # deepest first
        for _ in range(3):  # a dead holder's lock is removed, then the create is tried again
            if self._create():
                self.held = True
                return
            record = _holder(self.path)
            if record is not None and not _stale(record, self.path):
                self.release()
                raise OdmaugError(self._in_use(record))
            self._remove_dead(record)
        self.release()
        raise OdmaugError(f"could not take the lock {self.path}: other processes keep taking it; re-run")

    def _remove_dead(self, record) -> None:
        """Move the dead holder's lock away atomically (of several processes taking it over, one
        moves it) and delete it; a lock that turns out to be a new holder's is put back."""
        moved = self.root / f".{LOCK_FILE}.{os.getpid()}.stale"
        try:
            os.rename(self.path, moved)
        except FileNotFoundError:
            return  # another process moved it first
        if _holder(moved) != record:
            os.replace(moved, self.path)
            return
        moved.unlink(missing_ok=True)

    def _create(self) -> bool:
        """Create the lock file with its record in one step; False when it exists."""
        temporary = self.root / f".{LOCK_FILE}.{os.getpid()}.tmp"
        temporary.write_text(json.dumps(self.record))
        try:
            os.link(temporary, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links here (some network or FAT file systems): O_EXCL
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(self.record))
            return True
        finally:
            temporary.unlink(missing_ok=True)

    def _in_use(self, record: dict[str, Any]) -> str:
        if not record:
            return (f"{self.root} is locked by {self.path}, which cannot be read; if no odmaug run writes "
                    "there, delete that file and re-run")
        who = f"pid {record.get('pid')} on {record.get('host')}, started {record.get('started')}"
        there = "" if record.get("host") == socket.gethostname() else f"; if that process is gone, delete {self.path}"
        return f"{self.root} is in use by another odmaug {record.get('command', 'run')} ({who}){there}"

    def renew(self) -> None:
        """Mark the lock as still held now (its file's time); a lease holder calls it well within ``lease_s``."""
        if self.held:
            try:
                os.utime(self.path)
            except FileNotFoundError:
                pass

    def release(self) -> None:
        """Remove the lock if this process holds it, and the folders :meth:`acquire` made if still empty."""
        if self.held and _holder(self.path) == self.record:
            self.path.unlink(missing_ok=True)
        self.held = False
        for folder in self.made:
            try:
                folder.rmdir()  # only when empty
            except OSError:
                break
        self.made = []
