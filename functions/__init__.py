"""The serverless control plane: the HTTP API (functions.api) and the SQS worker."""
