"""MedSegAttentionLib: everything MedSegAttention runs outside Slicer (networks, inference, I/O).

Nothing in this package imports Slicer or Qt, so it runs under plain Python, in tests and on the
command line, and under Slicer's Python in a separate process.
"""

__version__ = "0.1.0"
