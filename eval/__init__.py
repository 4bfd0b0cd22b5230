"""Coder-grade evaluation: code extraction, the study's metrics with bootstrap intervals, the
self-contained report and the coder worklist (docs/design.md "Evaluation definitions").

Import modules from the package (`from eval import metrics`), never `import eval`: the bare
name would shadow Python's built-in `eval` in the importing module.
"""
