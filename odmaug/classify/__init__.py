"""Severity classifiers: any timm model, trained and evaluated on graded images.

Public API::

    train_classifier(recipe, train, val, test, out_dir, seed, device="auto") -> ClassifierResult
    train_seeds(recipe, train, val, test, out_root, seeds, device="auto") -> summary dict
    training_splits(recipe, manifest=None) -> (train, val, test | None)
    evaluate_classifier(classifier_dir, table, out_dir=None, device="cpu") -> dict
    grade_fidelity(classifier_dir, table) -> dict
    load_classifier(classifier_dir, device) -> (model, ClassifierMeta)
    load_classifier_features(classifier_dir, device) -> ClassifierFeatures
"""

from odmaug.classify.evaluate import evaluate_classifier, grade_fidelity
from odmaug.classify.features import ClassifierFeatures, load_classifier_features
from odmaug.classify.models import ClassifierMeta, create_model, load_classifier, save_classifier
from odmaug.classify.seeds import train_seeds
from odmaug.classify.datasets import training_splits
from odmaug.classify.outputs import ClassifierResult
from odmaug.classify.train import train_classifier

__all__ = [
    "ClassifierFeatures",
    "ClassifierMeta",
    "ClassifierResult",
    "create_model",
    "evaluate_classifier",
    "grade_fidelity",
    "load_classifier",
    "load_classifier_features",
    "save_classifier",
    "train_classifier",
    "train_seeds",
    "training_splits",
]
