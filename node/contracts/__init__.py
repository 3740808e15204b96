"""Deterministic smart contracts that every replica runs on each committed block."""
