"""TFX module code: what a user edits to change features, model and metrics.

The executors that replace TFX's stock ones for speed are in `executors/`.
"""
