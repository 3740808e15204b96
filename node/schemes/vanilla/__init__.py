"""The `vanilla` scheme: hierarchical FedAvg, devices → their MEC → the publisher.

How it works
------------
Start-up: every node sends ``hello`` to the publisher (again each second until its first
``global``); the publisher starts round 1 when all have answered, or at the start-up
timeout with those that did.

Round r: the publisher sends ``global{round, model, deadline_s}`` to every MEC (``model``:
the weights encoded once as the blob bytes, `weights_to_bytes`); each MEC checks it and
forwards the same bytes to its devices with 80% of the deadline left (our choice: it leaves
the rest for the MEC→publisher leg), and keeps them as a blob. A device loads the weights,
trains on its partition and sends ``update{round, blob, tx, loss, accuracy}`` to its MEC
(the weights as blob bytes and its signed transaction naming them). The MEC averages what it
got (or forwards the updates one by one where the aggregation strategy needs them: its
``needs.individual``) and sends ``partial{round, samples, contributors, missing, txs,
weights | updates, part, parts}`` when all its devices answered or its deadline passed (the
message classes: `messages.py`; updates one by one that would exceed half of
``max_message_bytes`` go in several parts, which the publisher joins). The publisher
combines the partials (FedAvg over partials weighted by their sample totals equals FedAvg
over all devices), sends the next round's global model, and only then evaluates this
round's model on the test set and records the round (metrics and block, under this round's
number) while the devices train. A device that crashed or is too slow is left out of that
round and logged. After the last round the publisher sends ``stop`` to every node.

The ledger: a device puts its trained weights in its blob store and signs
a ``task.record_update{task_id, round, blob hash, size, samples}`` transaction that travels
with the update; the MEC checks the signature, that the blob hashes to what the
transaction says, keeps the blob, and forwards the transactions with its partial. After
aggregating, the publisher submits the round's update transactions and its own
``task.record_global`` (the global model's blob hash, accuracy, contributors) to the task
chain through the committer its finality rule calls for (`node.roles.committers`): as the
single writer it builds the block, appends it and sends it to every node; with
``ledger.consensus: pbft`` the MECs order it by PBFT. Every node verifies a block before
appending it to its own ledger (when it has no round message waiting: the daemon handles
ledger messages after the round's): completely on a full replica; on a light one (with
``ledger.device_replica: light``, the default: the devices, and with a single writer the
MECs too, since neither reads the chain's state) its header link, certificate and Merkle
root. Blobs are hashed once where they are made or checked and fsynced behind the round
(`FileBlobStore.put_behind`). A MEC
writes its last device's update blob after its partial has left (the device keeps its own).
Block 1 publishes the task (escrowing the reward pool); the last block pays each device a
share of the pool proportional to the samples it contributed (our choice; the vanilla
baseline has no incentive rule) and closes the task. ``stop`` carries the final height so
that nodes wait (briefly) for the last block.

Each role checks who sent what (``global`` only from the publisher or one's own MEC,
``update`` only from one's own devices, for the current round, once) and that received
weights have the model's exact names, shapes and dtypes; anything else is dropped with
a counted reason.
"""

from __future__ import annotations

from node.schemes.vanilla.device import DeviceRole
from node.schemes.vanilla.mec import MecRole
from node.schemes.vanilla.publisher import PublisherRole
from node.schemes.vanilla.scheme import VanillaScheme

__all__ = ["DeviceRole", "MecRole", "PublisherRole", "VanillaScheme"]
