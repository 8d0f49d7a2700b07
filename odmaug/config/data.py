"""The ``data`` section: where images come from and how they are shaped."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from odmaug.config.section import Count, Section, Seed


class SyntheticDataConfig(Section):
    """The built-in synthetic ordinal datasets: fundus-like colour discs whose lesions grow with
    grade, or grayscale knee-radiograph-like images whose joint space narrows with grade."""

    kind: Literal["fundus", "radiograph"] = "fundus"
    """fundus (colour, :mod:`odmaug.data.synthetic`) or radiograph (grayscale, :mod:`odmaug.data.radiograph`)."""
    counts: list[Count] = Field(default_factory=lambda: [60, 30, 24, 16, 10])
    """Images per grade, before splitting into train/val/test."""
    native_size: int = Field(64, ge=16, le=512)
    """Resolution at which the images are drawn (then resized to ``data.image_size``)."""
    seed: Seed = 0
    """Seed of the drawings: the same seed gives the same images."""


class DataConfig(Section):
    """Where images come from and how they are shaped."""

    source: str = "retinamnist"
    """A registered data source (``odmaug.data.sources.DATA_SOURCES``): ``retinamnist``,
    ``synthetic``, ``folder`` or ``manifest``; checked by every command before any work."""
    path: Optional[str] = None
    """Folder (``root/<grade>/<image>``: any format Pillow reads, or DICOM ``.dcm``) or manifest
    CSV, for ``folder`` and ``manifest`` sources."""
    channels: Literal["auto", 1, 3] = "auto"
    """Channels the networks see: 1 (grayscale), 3 (RGB) or auto (1 when every image of the set
    is grayscale, else 3). Printed when resolved and recorded in the run."""
    window: Optional[tuple[float, float]] = None
    """DICOM VOI window (center, width) in modality units (CT: Hounsfield units), replacing the
    window stored in each file; e.g. (40, 400) for soft tissue."""
    group_from: Optional[str] = None
    """DICOM attribute whose value is the patient (group) when splits are drawn, e.g. PatientID;
    like a manifest's group column, but the value is hashed and never written anywhere."""
    data_dir: Optional[str] = None
    """Folder holding ``retinamnist.npz``; default ``$ODMAUG_DATA_DIR``, then the user cache."""
    num_classes: int = Field(5, ge=2, le=100)
    image_size: int = Field(32, ge=8, le=1024)
    crop_box: Optional[tuple[int, int, int, int]] = None
    """(left, top, right, bottom) in source pixels, applied before resizing (LIMUC: centre 128x128)."""
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    split_seed: Seed = 0
    """Seed of the stratified (and grouped) split for sources that have no split column."""
    group_pattern: Optional[str] = None
    """Regular expression with one capture group, searched in each file name for its patient (group)
    when splits are drawn, e.g. ``^(Patient\\d+)_`` for ``Patient012_left.jpg``; both eyes then land
    in one split. Folder and manifest sources without a group column; a name it misses is an error."""
    crop: Literal["none", "centre", "fundus"] = "none"
    """Per-image crop of real images before resizing: none (non-square images are squashed), centre
    (the central square) or fundus (the bright field of view, padded with black to a square)."""
    cache: bool = True
    """Keep decoded, cropped and resized file images on disk (one .npy each), so later stages skip decoding."""
    cache_dir: Optional[str] = None
    """Folder of that decode cache; None: ``$XDG_CACHE_HOME/odmaug/images`` (~/.cache)."""
    min_split_images: int = Field(10, ge=0, le=1_000_000)
    """Warn when a split of a folder or manifest source holds fewer images of a grade than this: with
    under ~10 images a grade's recall or F1 moves by 10 points or more per image (0: never warn)."""
    synthetic: SyntheticDataConfig = Field(default_factory=SyntheticDataConfig)

    @model_validator(mode="after")
    def _check(self) -> "DataConfig":
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("data.val_fraction + data.test_fraction must be below 1")
        if self.crop_box is not None:
            left, top, right, bottom = self.crop_box
            if not (0 <= left < right and 0 <= top < bottom):
                raise ValueError("data.crop_box must be (left, top, right, bottom) with left < right, top < bottom")
            if self.crop != "none":
                raise ValueError("data.crop_box and data.crop are alternatives: set one of them")
        if self.group_pattern is not None:
            import re

            try:
                groups = re.compile(self.group_pattern).groups
            except re.error as err:
                raise ValueError(f"data.group_pattern is not a regular expression: {err}") from None
            if groups != 1:
                raise ValueError(f"data.group_pattern needs exactly one capture group (has {groups}), e.g. ^(Patient\\d+)_")
        if self.window is not None and self.window[1] <= 0:
            raise ValueError("data.window is (center, width) with a width above 0")
        if self.group_from is not None and self.group_pattern is not None:
            raise ValueError("data.group_from and data.group_pattern are alternatives: set one of them")
        if self.source == "synthetic" and len(self.synthetic.counts) != self.num_classes:
            raise ValueError("data.synthetic.counts needs one count per grade (data.num_classes)")
        return self

