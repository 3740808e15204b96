"""The names of the data sets, models, partition schemes and privacy mechanisms (no torch).

The scenario schema and `bcfl validate` import these without importing torch; the modules
that implement them import their tuple from here, so the two cannot drift apart.
"""

from __future__ import annotations

DATASETS: tuple[str, ...] = ("digits", "fashion-mnist", "mnist", "mnist-5k", "cifar10")
MODELS: tuple[str, ...] = ("mlp", "cnn", "small-cnn", "alexnet")
PARTITIONS: tuple[str, ...] = ("iid", "dirichlet", "shards")
MECHANISMS: tuple[str, ...] = ("classic", "analytic")
