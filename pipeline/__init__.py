"""The pipeline: its configuration, definition, input check and runners."""
