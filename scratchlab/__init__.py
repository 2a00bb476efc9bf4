"""scratchlab: experiment-tracked scratch detection research and inspection."""
__version__ = "0.1.0"
