"""Metrics: ordinal classification metrics (QWK, ...) and generative metrics (FID, KID, precision/recall)."""

from odmaug.metrics.classification import classification_metrics, per_grade_table, summarize_runs

# Generative metrics import torch-fidelity (and torchvision), seconds of start-up: loaded on first use.
_GENERATIVE = {
    "compute_generative_metrics": "odmaug.metrics.generative",
    "evaluate_generated": "odmaug.metrics.generative",
    "metrics_from_features": "odmaug.metrics.generative",
    "fid_from_features": "odmaug.metrics.generative",
    "kid_from_features": "odmaug.metrics.generative",
    "precision_recall": "odmaug.metrics.generative",
    "generative_table": "odmaug.metrics.generative_table",
    "build_extractor": "odmaug.metrics.features",
    "REGISTRY": "odmaug.metrics.features",
}


def __getattr__(name: str):
    if name in _GENERATIVE:
        import importlib

        return getattr(importlib.import_module(_GENERATIVE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["classification_metrics", "per_grade_table", "summarize_runs", *_GENERATIVE]
