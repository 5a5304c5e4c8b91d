"""TF Serving's REST and gRPC API for the pipeline's pushed models."""
