"""Saffron: safety inference scaling for LLMs (Saffron-1, Qiu et al. 2025, arXiv 2506.06444)."""

__version__ = "0.1.0"
