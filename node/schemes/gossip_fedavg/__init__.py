"""The `gossip-fedavg` scheme: vanilla FedAvg whose devices gossip over their D2D links.

How it works
------------
The round is vanilla's (`node.schemes.vanilla`): the publisher sends the global model to the
MECs, each MEC forwards it to its devices, each device trains and signs a
``task.record_update`` transaction naming its update's blob, the MECs send their partial
averages, the publisher combines them and writes the round's block (single writer).

What changes is how updates and blocks travel inside a MEC's group (its devices, which the
topology links by D2D, and the MEC): by gossip (`node.gossip.GossipService`: push to a
seeded fan-out of neighbours, de-duplication by content hash, TTL, IHAVE/IWANT pull of what
is missing), along the topology's D2D links and the device-MEC links.

- ``updates.<mec>``: a device publishes its update (the canonical map of its update's blob
  and its signed transaction, `roles.update_item`; the unsigned loss and accuracy stay home)
  instead of sending it to its MEC. Every device relays it after checking it
  (`roles.UpdateCheck`: the transaction's Ed25519 signature by a device of the group, that
  the blob hashes to what it names); a corrupted or forged copy is dropped and counted
  (``gossip_invalid`` in ``counters.csv``). The MEC averages the updates that reached it
  when all its devices' have, or at its deadline (a late one is dropped as vanilla's MEC
  drops it).
- ``blocks.<mec>``: the publisher sends each block to the MECs only; a MEC publishes every
  block its chain appends into its group's gossip, and devices relay blocks (after checking
  the Merkle root and the writer's certificate) and hand them to their ledger, which appends
  the next block and asks the relay for any it lacks.

Parameters (``scheme: {name: gossip-fedavg, fanout: 2, ttl: 8, heartbeat_s: 0.2,
want_timeout_s: 1.0}``): see `scheme.GossipFedAvgParams`. ``ledger.consensus`` must be
``single``.

Adding a scheme like this one: a folder with the `Scheme` subclass (parameters and plan,
`scheme.py`) and its roles (`roles.py`, here vanilla's roles subclassed), plus one line in
the registry, ``node/schemes/__init__.py``.
"""

from node.schemes.gossip_fedavg.scheme import GossipFedAvgParams, GossipFedAvgScheme

__all__ = ["GossipFedAvgParams", "GossipFedAvgScheme"]
