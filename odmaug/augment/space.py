"""Will a synthesis run fit? Disk and memory estimates from the image counts alone.

Both are checked before anything is generated or listed, so a request far beyond the machine
(``--n 1000000000``) is one error line at once, not an hour of work and a killed process.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Optional

from odmaug.errors import OdmaugError


def estimate_png_bytes(image_size: int, block: int = 4096) -> int:
    """Disk bytes one PNG can take: raw pixels plus PNG/zlib overhead, rounded up to a disk block.

    Diffusion samples are noisy, so PNG compresses them little; the estimate assumes none.
    """
    raw = 3 * image_size * image_size + image_size  # RGB bytes + one filter byte per row
    worst = raw + raw // 1000 + 128  # zlib stored blocks + PNG signature and chunks
    return int(math.ceil(worst / block) * block)


def check_disk_space(folder: Path, n_images: int, image_size: int) -> int:
    """Refuse a run whose images would not fit on the disk holding ``folder``; return the estimate."""
    need = n_images * (estimate_png_bytes(image_size) + 256) + (1 << 20)  # + manifest rows, 1 MiB margin
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need > free:
        raise OdmaugError(
            f"not enough disk space in {folder}: {n_images} images need about {need / 2**20:.1f} MiB, "
            f"{free / 2**20:.1f} MiB free; ask for fewer images (--n, --to-count) or use another --out"
        )
    return need


MEMORY_PER_IMAGE = 2048  # peak per image in the folder at the end: scan entry, manifest row, CSV text (~1 KiB), x2


def available_memory() -> Optional[int]:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(n_images: int) -> int:
    """Refuse a run whose final listing and manifest of ``n_images`` would not fit in memory; return the estimate.

    Nothing else a run holds grows with the request: its (grade, seed) pairs are never listed.
    """
    need = n_images * MEMORY_PER_IMAGE
    free = available_memory()
    if free is not None and need > free:
        raise OdmaugError(
            f"not enough memory for the manifest: {n_images} images need about {need / 2**20:.0f} MiB, "
            f"{free / 2**20:.0f} MiB available; ask for fewer images (--n, --to-count)"
        )
    return need
