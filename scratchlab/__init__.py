"""scratchlab: experiment-tracked scratch detection research and inspection."""
__version__ = "0.1.0"

__all__ = ["Predictor", "__version__"]


def __getattr__(name: str):
    """``scratchlab.Predictor`` without importing torch & co. on ``import scratchlab``."""
    if name == "Predictor":
        from scratchlab.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'scratchlab' has no attribute {name!r}")
