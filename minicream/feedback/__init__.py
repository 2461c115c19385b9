"""People's ratings of best-of-N candidates: a checked SQLite store (store.py, schema.py), a dataset export
(export.py) and simulated ratings from the nearest-real-image judge (simulate.py, imported on use: it needs
torch and a pipeline). The evaluator is fine-tuned on them by `minicream.evaluator.preference`."""
from .api import MAX_BODY_BYTES, handle_feedback, record_candidate_pngs
from .store import (Counts, FeedbackError, FeedbackFull, FeedbackLimits, FeedbackStore, Preference, RateLimited, Rating, Recorded,
                    UnknownImage, png_sha256)

__all__ = ["Counts", "FeedbackError", "FeedbackFull", "FeedbackLimits", "FeedbackStore", "Preference", "RateLimited", "Rating",
           "Recorded", "UnknownImage", "png_sha256", "MAX_BODY_BYTES", "handle_feedback", "record_candidate_pngs",
           "export_feedback", "read_feedback_dataset"]


def __getattr__(name):
    if name in ("export_feedback", "read_feedback_dataset"):
        from . import export

        return getattr(export, name)
    raise AttributeError(name)
