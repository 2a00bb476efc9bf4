"""Scratch synthesis: curved scratches on printed codes (``text``) and rolled steel (``metal``)."""
from scratchlab.data.synth.engine import SynthResult, apply_scratches
from scratchlab.data.synth.metal import render_metal
from scratchlab.data.synth.params import MetalParams, ScratchParams, TextParams
from scratchlab.data.synth.text import render_text
from scratchlab.data.synth.writer import KINDS, load_synthetic_index, write_synthetic_dataset

__all__ = [
    "KINDS",
    "MetalParams",
    "ScratchParams",
    "SynthResult",
    "TextParams",
    "apply_scratches",
    "load_synthetic_index",
    "render_metal",
    "render_text",
    "write_synthetic_dataset",
]
