"""File formats shared by the pipeline and inference: the CSV rules, one
atomic write, and nothing that needs TensorFlow at import time."""
