"""The `flchain` scheme: FLchain (Majeed & Hong 2019, ref. [11] of the two-layer paper), the
MEC-enabled blockchain with a global-model state trie per channel.

How it works
------------
The chain is the MECs': every node keeps one replica, and the MECs order it by PBFT
(`Committee.bft` of the MECs, as vanilla with ``ledger.consensus: pbft``; the publisher is
the PBFT client that submits each block's transactions). PBFT needs n >= 3f + 1 >= 4
replicas: with 3 MECs (the paper's case study) the publisher is the 4th (our choice; it
orders and signs blocks and computes no model), fewer MECs are refused. ``channels`` cuts
the MECs, in topology order, into consecutive groups (`scheme.channel_mecs`; our choice);
they share the one chain, each with its own entries in the state trie (FLchain gives each
channel its own ledger: a chain per channel needs a publisher keeping several chains,
which vanilla's publisher does not).

Round r (vanilla's start-up, hello, deadlines, devices and stop are reused unchanged):

1. The publisher sends the global model to the MECs, each forwards it to its devices, each
   device trains and sends its update with its signed ``task.record_update`` (vanilla).
2. Each MEC stores its devices' updates (blobs) and, when all answered or at 80% of the
   deadline, signs a ``flchain.record_updates`` transaction naming their blob hashes, and
   sends to every other MEC of its channel ``flchain.share`` (that record, its devices'
   transactions) and then each update as ``flchain.update`` (one model per message): the
   synchronous transfer.
3. Each MEC checks every share (the record is the sending MEC's, for this channel and round,
   about its own devices; each update hashes to what the record names and has the model's
   shapes; the device transactions are validly signed; updates that arrive before their
   record are kept for it), and once it holds the shares of every MEC of its
   channel (or at 90% of the deadline, our choice) computes the channel's global model
   itself with the run's aggregator over all the shared updates (in device order, so every
   MEC with the same shares gets the same bytes), keeps it as a blob, signs
   ``flchain.record_global`` (its hash) and sends ``flchain.model`` to the publisher.
4. The publisher waits for every MEC's model (or its deadline: the round ends when every
   MEC of the channel holds the new global model, or at the deadline). Per channel it
   takes the model most of the channel's MECs hold; with several channels it averages the
   channels' models by sample totals (our choice). It then goes on as vanilla's publisher:
   the next round's global model, the evaluation, the round block (the devices' update
   records, the MECs' ``flchain.*`` records, ``task.record_global``) ordered by the MECs.

The global-model state trie is the ``flchain`` contract's state (`node.contracts.flchain`):
``flchain.global`` keyed ``{task}/{channel}/{round}`` holds the model's hash and the MECs
holding it; the first record fixes it (the publisher orders the majority's records first),
a MEC with another model is reverted, visibly.

A MEC that is down: its devices get no model and are missing; the other MECs of its channel
wait for its share until 90% of the deadline and the publisher for its model until the
deadline, so every round with a MEC down lasts the full deadline (the cost of the
synchronous transfer), and its devices' updates are lost for that round.

Parameters: ``scheme: {name: flchain, channels: 1}`` (`scheme.FlchainParams`) with
``ledger.consensus: pbft``; the aggregator is the scenario's (``aggregator:``), run by every
MEC on its channel's updates (validation accuracy, where the rule needs it, on the same
first test samples as vanilla's publisher uses).

What FLchain catches and does not (the paper's reason it degrades under attack):
- caught: a share forged or altered in transit (the record's MEC signature and blob
  hashes), an update shared without its device's signed transaction (refused by the
  channel; the publisher also leaves such a contributor out, ``unsigned_update``), a MEC's
  own wrong aggregate (a ``malfunction`` also corrupts the model it computes: it is
  outvoted per channel and its ``flchain.record_global`` reverted; a tie goes to the MEC
  first in id order, and a MEC alone in its channel is never outvoted);
- not caught: what a MEC does to its own devices' updates before it records them. A
  ``tamper``ing MEC's altered updates and a ``malfunction``ing MEC's garbage updates are
  recorded under its signature, and every MEC of the channel aggregates them; nothing
  compares them with the devices' signed ``task.record_update`` hashes (an audit of the
  chain can: both are on it). Label-flipping devices are aggregated like any other.
"""

from node.schemes.flchain.scheme import FlchainParams, FlchainScheme

__all__ = ["FlchainParams", "FlchainScheme"]
