"""gRPC stubs generated from proto/augserve/v1/augserve.proto (tools/generate_stubs.py)."""
