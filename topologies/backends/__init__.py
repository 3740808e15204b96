"""Backends that realise a TopologySpec on a concrete network emulator."""
