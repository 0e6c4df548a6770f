"""The module's parts that need Slicer and Qt, one job per file; imported by MedSegAttention.py only.

The logic they call is Qt-free and lives in ``MedSegAttentionLib.slicer_support`` (run by pytest).
"""
