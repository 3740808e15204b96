"""Consensus protocol cores (sans-IO): PBFT for a shard's MEC servers."""
