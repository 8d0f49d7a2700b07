"""Metrics: ordinal classification metrics (QWK, ...) and generative metrics (FID, KID, precision/recall)."""

from odmaug.metrics.classification import classification_metrics, per_grade_table, summarize_runs

__all__ = ["classification_metrics", "per_grade_table", "summarize_runs"]
