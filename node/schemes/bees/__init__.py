"""BEES scheme (003 paper); the model lives in model.py."""
