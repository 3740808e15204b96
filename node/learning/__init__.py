"""Federated-learning pieces for node daemons: datasets, partitions, models, training, FedAvg."""
