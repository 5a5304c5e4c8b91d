"""Closing the loop: skew and drift of logged requests (`tfx-e2e monitor`)."""
