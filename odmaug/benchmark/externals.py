"""The ``external:<name>=<path>`` arm (registered here) and its ready synthetic images: read, checked and named.

An external arm and its combinations with a remedy (``external:sg=/data/sg+focal``) share one
table: the same name with the same path is read once; the same name with another path, or a name
a generator's images go by, is an error.
"""

from __future__ import annotations

from odmaug.benchmark.arms import ARMS, Arm, WITH_SYNTHETIC, register_arm
from odmaug.config import DataConfig
from odmaug.data import ImageTable, table_from_spec
from odmaug.errors import OdmaugError


def external_images(argument: str, data: DataConfig) -> ImageTable:
    """``<name>=<path>`` -> the training images at ``path``, marked synthetic.

    Raises:
        OdmaugError: a folder or manifest that is missing, unreadable, has no images or does not
            fit ``data.num_classes``.
    """
    name, path = argument.split("=", 1)
    try:
        table = table_from_spec(path, data).split("train")
    except OSError as err:  # e.g. a folder without read permission
        raise OdmaugError(f"cannot read {path} ({err.strerror or err})") from None
    if len(table) == 0:
        raise OdmaugError(f"{path} has no training images")
    table.frame["source"] = "synthetic"
    table.name = f"{name} (external)"
    return table


def load_externals(arms: list[Arm], data: DataConfig) -> dict[str, ImageTable]:
    """The ready synthetic images of every arm that brings its own (``external:``), by name.

    Raises:
        OdmaugError: a name that is taken (by a generator, or by another such arm with another
            path), or images that cannot be used (see :func:`external_images`); the message names the arm.
    """
    generators = {k.generated_name for k in ARMS.values() if k.generator is not None}
    tables: dict[str, ImageTable] = {}
    paths: dict[str, str] = {}
    for arm in (a for a in arms if a.kind.images is not None):
        name = arm.synthetic_name
        if name in tables and paths[name] == arm.argument:  # e.g. external:sg=... and external:sg=...+focal
            continue
        if name in generators or name in tables:
            raise OdmaugError(f"benchmark arm {arm.spec}: the name '{name}' is taken (by the {name} generator "
                              "or another external arm); give it another name")
        try:
            tables[name], paths[name] = arm.kind.images(arm.argument, data), arm.argument
        except OdmaugError as err:
            raise OdmaugError(f"benchmark arm {arm.spec}: {err}") from None
    return tables


register_arm("external", "filled with images of a folder or manifest: external:<name>=<path>", WITH_SYNTHETIC,
             images=external_images)
