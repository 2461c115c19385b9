"""Image evaluator: a mini-CLIP trained on the project's data, used for best-of-N reranking and metrics.

Training code (`train_evaluator`, `load_recipe`) lives in `minicream.evaluator.train`; it is imported on
first use so that the pipeline does not pay for Accelerate at import time.
"""
from .model import EvaluatorConfig, MiniCLIP
from .scorer import EVALUATOR_DIR, Evaluator

__all__ = ["EVALUATOR_DIR", "Evaluator", "EvaluatorConfig", "MiniCLIP", "train_evaluator", "load_recipe", "EvaluatorRecipe"]


def __getattr__(name):
    if name in ("train_evaluator", "load_recipe", "EvaluatorRecipe"):
        from . import train

        return getattr(train, name)
    raise AttributeError(name)
