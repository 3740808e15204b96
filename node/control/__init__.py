"""The node's out-of-band control plane (gRPC over a Unix socket in the node's directory)."""
