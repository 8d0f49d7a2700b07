"""Severity classifiers: any timm model, trained and evaluated on graded images."""

from odmaug.classify.features import ClassifierFeatures, load_classifier_features
from odmaug.classify.models import ClassifierMeta, create_model, load_classifier, save_classifier

__all__ = [
    "ClassifierFeatures",
    "ClassifierMeta",
    "create_model",
    "load_classifier",
    "load_classifier_features",
    "save_classifier",
]
