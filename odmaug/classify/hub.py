"""``classifier.pretrained: hub``: timm's own ImageNet weights from the Hugging Face hub cache.

The weights file is the one timm itself reads (``pretrained_cfg.hf_hub_id``, its safetensors file);
it is looked up in the Hugging Face cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
``~/.cache/huggingface/hub``) and downloaded there only when neither ``$HF_HUB_OFFLINE`` nor
``$ODMAUG_OFFLINE`` is set. timm then builds the model from that file
(``timm.create_model(name, pretrained=True, num_classes=..., in_chans=...)``): it adapts RGB stems
to other channel counts and leaves the head random when the grade count differs. Nothing is unpickled.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rich.markup import escape
from torch import nn

from odmaug.errors import MissingDataError, OdmaugError

HUB = "hub"
"""The ``classifier.pretrained`` value that asks for timm's hub weights."""
_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class HubWeights:
    """One hub weights file: ``repo_id`` (e.g. ``timm/resnet18.a1_in1k``), the commit it was
    cached at, the file name in the repository and its local path."""

    repo_id: str
    revision: str
    filename: str
    path: Path

    def record(self) -> dict[str, str]:
        """What classifier.json keeps (no local path: it differs between machines)."""
        return {"repo_id": self.repo_id, "revision": self.revision, "filename": self.filename}


def offline() -> bool:
    """Downloads are off: ``$HF_HUB_OFFLINE`` (as huggingface_hub reads it) or ``$ODMAUG_OFFLINE``."""
    return any(os.environ.get(var, "").strip().lower() in _TRUE for var in ("HF_HUB_OFFLINE", "ODMAUG_OFFLINE"))


def hub_cache() -> Path:
    """The Hugging Face hub cache folder, as huggingface_hub resolves it (read now, not at import)."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


def _hub_file(name: str) -> tuple[str, str, str]:
    """(repo id, revision or "main", safetensors file name) of timm's pretrained weights for ``name``."""
    from timm.models import get_pretrained_cfg

    from odmaug.classify.timm_build import check_model_name

    check_model_name(name)
    cfg = get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        raise OdmaugError(f"classifier.pretrained=hub: timm has no Hugging Face hub weights for '{name}' "
                          "(its pretrained_cfg has no hf_hub_id); give a local .safetensors file instead")
    repo_id, _, revision = hub_id.partition("@")
    filename = getattr(cfg, "hf_hub_filename", None) or "model.safetensors"
    if filename == "pytorch_model.bin":  # timm prefers the safetensors copy of the default name
        filename = "model.safetensors"
    if not filename.endswith(".safetensors"):
        raise OdmaugError(f"classifier.pretrained=hub: timm's weights for '{name}' ({repo_id}, {filename}) are "
                          "not a safetensors file and are never unpickled here; give a local .safetensors file")
    return repo_id, revision or "main", filename


def _missing(name: str, repo_id: str, filename: str, cache: Path, why: str) -> MissingDataError:
    folder = "models--" + repo_id.replace("/", "--")
    return MissingDataError(
        f"classifier.pretrained=hub: the weights of '{name}' ({repo_id}, {filename}) are not in the Hugging Face "
        f"cache {cache} and {why}; on a connected machine run "
        f"python -c \"import timm; timm.create_model('{name}', pretrained=True)\" and copy {folder} from its "
        f"$HF_HOME/hub (default ~/.cache/huggingface/hub) into {cache}")


def hub_weights(name: str) -> HubWeights:
    """Find timm's weights for ``name`` in the hub cache, downloading them first unless offline.

    Raises:
        OdmaugError: unknown model, no hub weights in timm, not safetensors.
        MissingDataError: offline and not cached, or the download failed (one line: the hub id,
            the cache folder and the command that fetches it on a connected machine).
    """
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    repo_id, revision, filename = _hub_file(name)
    cache = hub_cache()
    found = try_to_load_from_cache(repo_id, filename, cache_dir=cache, revision=revision)
    if not isinstance(found, str):
        if offline():
            raise _missing(name, repo_id, filename, cache, "downloads are off ($HF_HUB_OFFLINE or $ODMAUG_OFFLINE)")
        try:
            found = hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache)
        except Exception as err:  # noqa: BLE001  (network, HTTP and file errors alike: one line)
            reason = " ".join(str(err).split())[:200]
            raise _missing(name, repo_id, filename, cache, f"could not be downloaded ({type(err).__name__}: {reason})") from None
    path = Path(found)
    # the cache keeps a file as <cache>/models--org--name/snapshots/<commit>/<filename>
    return HubWeights(repo_id, path.parents[len(Path(filename).parts) - 1].name, filename, path)


def check_hub(name: str) -> None:
    """Before any training or folder: the hub weights are cached (downloaded now when online)."""
    hub_weights(name)


def load_hub(model: nn.Module, name: str, num_classes: int, image_size: int, channels: int) -> dict:
    """Replace ``model``'s weights with timm's pretrained ones for the same architecture.

    timm builds a second model from the cached file (RGB stem adapted to ``channels``, head left at
    its random initialisation when ``num_classes`` differs from the file's); its state dict is copied
    into ``model``. One line on stderr says which weights and what stayed random.

    Returns:
        classifier.json's record: ``{"pretrained": "hub", "pretrained_hub": {repo_id, revision,
        filename}, "pretrained_random": [head tensors left random]}``.
    """
    from safetensors import safe_open

    from odmaug.classify.timm_build import build_timm_model
    from odmaug.classify.pretrained import _head_names

    weights = hub_weights(name)
    built = build_timm_model(name, num_classes, image_size, channels, pretrained=True,
                   pretrained_cfg_overlay={"file": str(weights.path), "source": ""})
    model.load_state_dict(built.state_dict())
    with safe_open(str(weights.path), framework="pt") as f:
        saved = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    own, head = model.state_dict(), _head_names(model)
    left = [k for k in own if any(k == h or k.startswith(h + ".") for h in head)
            and saved.get(k) != tuple(own[k].shape)]
    _say(weights, len(own), left)
    return {"pretrained": HUB, "pretrained_hub": weights.record(), "pretrained_random": left}


def _say(weights: HubWeights, total: int, left: list[str]) -> None:
    from odmaug.console import err_console, is_main_process

    if not is_main_process():
        return
    random = f"left random: {', '.join(left)} (the classifier head)" if left else "nothing left random"
    text = (f"pretrained hub {weights.repo_id}@{weights.revision[:12]} ({weights.filename}): "
            f"{total} tensors set by timm; {random}")
    err_console.print(escape(text), highlight=False, soft_wrap=True)
