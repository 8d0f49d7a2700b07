"""One way to fetch a published file: streamed to disk atomically and checked against its checksum.

The bytes are hashed while they are written, so a large file is read once; the file is kept only
when its checksum matches (a torn or tampered download leaves nothing behind). The checksum is the
one the publisher gives (MedMNIST publishes md5, torch hub names files by a sha256 prefix), which
is why this module hashes with :mod:`hashlib` directly instead of :mod:`odmaug.digest`.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from pathlib import Path

from odmaug.atomic import WriteError, atomic_path
from odmaug.errors import OdmaugError

_BLOCK = 1 << 20


class DownloadFailed(OdmaugError):
    """The server could not be reached or the transfer broke; ``reason`` is the network's words."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"download of {url} failed: {reason}")
        self.reason = reason


def download_checked(url: str, dest: str | Path, algorithm: str, expected: str, timeout: float) -> Path:
    """Fetch ``url`` into ``dest``, keeping it only when its ``algorithm`` hex digest starts with ``expected``.

    Args:
        url: where the file is published.
        dest: the file to create (its folder is made; an existing file is replaced only on success).
        algorithm: a :func:`hashlib.new` name (``md5``, ``sha256``).
        expected: the published hex digest, or its prefix.
        timeout: seconds to wait for the server before giving up.

    Raises:
        DownloadFailed: a network error (nothing was kept).
        OdmaugError: the checksum does not match (nothing was kept).
        WriteError: ``dest`` cannot be written.
    """
    digest = hashlib.new(algorithm)
    try:
        with atomic_path(dest) as tmp:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
                while block := resp.read(_BLOCK):
                    digest.update(block)
                    out.write(block)
            if not digest.hexdigest().startswith(expected):
                raise OdmaugError(f"downloaded {Path(dest).name} has the wrong {algorithm} (expected {expected}); nothing was kept")
    except WriteError:
        raise
    except (urllib.error.URLError, OSError, TimeoutError) as err:  # network errors are OSErrors too
        raise DownloadFailed(url, str(getattr(err, "reason", err))) from None
    return Path(dest)
