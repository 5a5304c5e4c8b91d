"""Offline inference on pushed models: batch and streaming prediction jobs."""
