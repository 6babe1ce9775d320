"""Generated gRPC code for the latentwatch.v1 API (regenerate with `make protos`)."""
