"""The standard FID Inception-V3 (torch-fidelity's network) from a local file, offline-first.

The network is torch-fidelity's ``FeatureExtractorInceptionV3`` (the TensorFlow FID graph ported to
PyTorch: TF-compatible bilinear resize to 299 px, ``pool3`` 2048-d features), so figures match
torch-fidelity, pytorch-fid and torchmetrics. Only where the weights come from differs:

1. ``metrics.inception_weights`` / ``--inception-weights`` (a path the user gave: it must exist);
2. ``$ODMAUG_INCEPTION_WEIGHTS`` (same);
3. the user cache ``~/.cache/odmaug/weights/`` and torch hub's cache (where torch-fidelity puts it);
4. a download into the user cache (short timeout; not when ``$ODMAUG_OFFLINE`` is set).

Otherwise :class:`InceptionUnavailable` says, in one line, that Inception metrics are skipped and
how to provide the file. Files are read without unpickling code (``torch.load(weights_only=True)``
or safetensors): torch-fidelity's own loader calls ``torch.load(weights_only=False)``, so we hand the
constructor a state dict we loaded ourselves instead of a path.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import torch
from torch_fidelity import feature_extractor_inceptionv3 as tf_inception

from odmaug.atomic import WriteError, atomic_path
from odmaug.data.retinamnist import OFFLINE_ENV, cache_dir
from odmaug.digest import file_digest
from odmaug.download import DownloadFailed, download_checked
from odmaug.errors import MissingDataError, OdmaugError

WEIGHTS_ENV = "ODMAUG_INCEPTION_WEIGHTS"
WEIGHTS_URL = tf_inception.URL_INCEPTION_V3
WEIGHTS_FILENAME = WEIGHTS_URL.rsplit("/", 1)[-1]  # weights-inception-2015-12-05-6726825d.pth
WEIGHTS_SHA256_PREFIX = "6726825d"  # torch.hub convention: the file name carries its sha256 prefix
DOWNLOAD_TIMEOUT_S = 10.0
FEATURE_LAYER = "2048"  # pool3, the layer FID, KID and precision/recall use


class InceptionUnavailable(MissingDataError):
    """No Inception weights here and none downloadable: Inception metrics are skipped."""


def weights_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/odmaug/weights`` (default ``~/.cache/odmaug/weights``)."""
    return cache_dir() / "weights"


def skip_message(reason: str) -> str:
    """The one line that says Inception metrics are skipped and exactly how to provide the file."""
    return (
        f"Inception metrics skipped ({reason}): download {WEIGHTS_URL} and pass --inception-weights FILE, "
        f"set {WEIGHTS_ENV}=FILE, or put {WEIGHTS_FILENAME} in {weights_cache_dir()}/"
    )


def _given(path: str | os.PathLike, origin: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise OdmaugError(f"Inception weights not found: {path} (from {origin})")
    return path


def _download(dest: Path) -> Path:
    """Fetch the torch-fidelity weights into ``dest`` atomically, checking the sha256 prefix."""
    try:
        return download_checked(WEIGHTS_URL, dest, "sha256", WEIGHTS_SHA256_PREFIX, DOWNLOAD_TIMEOUT_S)
    except (DownloadFailed, WriteError) as err:  # an unwritable cache skips Inception too
        reason = err.reason if isinstance(err, DownloadFailed) else str(err)
        raise InceptionUnavailable(skip_message(f"download failed: {reason}")) from None


def locate_inception_weights(explicit: Optional[str] = None, download: bool = True) -> Path:
    """Path of the Inception-V3 FID weights (see the module docstring for the order).

    Raises:
        OdmaugError: a path given explicitly (argument or environment variable) does not exist.
        InceptionUnavailable: no file found and no download possible.
    """
    if explicit:
        return _given(explicit, "--inception-weights / metrics.inception_weights")
    if os.environ.get(WEIGHTS_ENV):
        return _given(os.environ[WEIGHTS_ENV], f"${WEIGHTS_ENV}")
    candidates = [weights_cache_dir() / WEIGHTS_FILENAME, Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILENAME]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    if not download or os.environ.get(OFFLINE_ENV, "").lower() in ("1", "true", "yes"):
        raise InceptionUnavailable(skip_message(f"no weights file and ${OFFLINE_ENV} is set"))
    return _download(candidates[0])


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a tensors-only ``.pth``, never executing pickled code."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is one user-facing line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise OdmaugError(f"{path}: not a readable weights file (.pth state dict or .safetensors): {first}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise OdmaugError(f"{path}: expected a state dict of tensors")
    return state


class FidInceptionV3(tf_inception.FeatureExtractorInceptionV3):
    """torch-fidelity's FID Inception-V3, built from a state dict we loaded (None: random init)."""

    def __init__(self, state: Optional[dict[str, torch.Tensor]]) -> None:
        with _weights_from(state):
            super().__init__("inception-v3-compat", [FEATURE_LAYER])

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # type: ignore[override]
        if state_dict is None:  # random initialisation: tests of the loading path only
            return None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


@contextmanager
def _weights_from(state: Optional[dict[str, torch.Tensor]]) -> Iterator[None]:
    # torch-fidelity's __init__ fetches its weights through torch.hub (network + unrestricted
    # unpickling); for the duration of the constructor that function returns our state dict.
    original = tf_inception.load_state_dict_from_url
    tf_inception.load_state_dict_from_url = lambda *args, **kwargs: state
    try:
        yield
    finally:
        tf_inception.load_state_dict_from_url = original


def build_inception(path: str | Path, device: str | torch.device = "cpu") -> FidInceptionV3:
    """The FID Inception-V3 with the weights in ``path``, in eval mode on ``device``."""
    state = read_weights(path)
    try:
        net = FidInceptionV3(state)
    except RuntimeError as err:
        raise OdmaugError(
            f"{path}: weights do not match the FID Inception-V3 ({str(err).strip().splitlines()[0]})"
        ) from None
    # channels_last runs the fp32 convolutions ~1.5x faster on CPU with identical results.
    return net.to(device).to(memory_format=torch.channels_last).eval()


def save_random_inception_weights(path: str | Path, seed: int = 0) -> Path:
    """A randomly initialised FID Inception-V3 saved as safetensors (tests of the loading path).

    Its features are meaningless for judging images; it only exercises the same code as real weights.
    """
    from safetensors.torch import save_file

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = FidInceptionV3(None)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
    return Path(path)


class InceptionFeatures:
    """Callable pool3 features: uint8 [B, 3, H, W] (any H, W) -> float32 [B, 2048] on the CPU.

    Attributes:
        name: ``inception`` (shown beside every figure).
        identity: network, layer and the weights file's sha256 (part of the cache key).
        image_size: None: any size is accepted; the network resizes to 299 px itself, like
            torch-fidelity (TF-compatible bilinear), so results match the standard FID.
        dim: 2048.
    """

    image_size: Optional[int] = None
    dim = 2048

    def __init__(self, weights: str | Path, device: str | torch.device = "cpu") -> None:
        self.weights = Path(weights)
        self.device = torch.device(device)
        self.net = build_inception(self.weights, self.device)
        self.name = "inception"
        self.identity = f"torch-fidelity-inception-v3-compat/pool3/sha256:{file_digest(self.weights)}"

    @torch.no_grad()
    def __call__(self, images_uint8: torch.Tensor) -> torch.Tensor:
        (features,) = self.net(images_uint8.to(self.device))  # [B, 2048]
        return features.float().cpu()
