"""The `blockfl` scheme: BlockFL (Kim et al. 2019, reference [10] of the two-layer paper), a
baseline with one proof-of-work chain and on-device aggregation.

How it works
------------
One chain, kept by every node (devices, MECs, the publisher), finalised by proof of work
(`node.core.finality.ProofOfWork`: the block hash below the target of ``difficulty_bits``,
signed by the one miner that found it). The miners are the MECs (our choice: the paper's
miners are separate nodes or the devices themselves; here the edge servers mine and the
devices do not, so that they keep training).

Round r (every step checked as in vanilla: signatures, blob hashes, model shapes):

1. Each device learns from the best tip that round r-1's updates are on chain (round 1:
   that the task is published), fetches their blobs on demand (``pow.blob_want`` to the
   miners, then to the device itself), aggregates them itself (the run's aggregator,
   FedAvg by default, over the updates in device-id order: every node gets the same
   weights), trains, and sends vanilla's ``update{round, blob, tx}`` (its signed
   ``task.record_update``) to every miner.
2. Each miner collects the round's updates until every device answered or its deadline
   (``training.round_deadline_s`` from when it saw the round's first block) passed, and
   holds every new best tip ``settle_s`` before mining on it (so that competing blocks of
   that height reach it first: Nakamoto consensus assumes a block interval well above the
   propagation delay, which proof of work alone does not give at testbed difficulties), then
   builds a candidate block on its best tip holding the publisher's pending transactions
   (``pow.txs``: round r-1's ``task.record_global``) and the updates, and mines it: it tries
   ``timestamp_ms`` values in slices of ``slice_attempts`` hashes from a timer (the daemon
   stays responsive), until the hash meets the target. It records when it began mining the
   block and when it found the proof (`ChainStore.record_proposal`): the block's proposed and
   certified times in ``blocks.csv`` (the mined header's timestamp runs ahead of the clock).
3. The first miner to find one signs it and sends it to every node (``pow.block``). Each
   node checks it completely (proof of work, signature, every transaction, re-execution of
   the contracts on the parent's state: `forkchoice.BlockTree.add`); a miner that sees a
   valid block on a better branch abandons its own work and starts on the new tip.
4. The publisher aggregates the same block the same way, evaluates the model on the test
   set, writes the round record (metrics, as vanilla's publisher does) and sends its
   ``task.record_global`` to the miners, who put it in the next round's block.

Forks: two miners may find a block at the same height. Each node keeps the unconfirmed
blocks in a tree above its ledger (`forkchoice`); the best branch is the longest (Nakamoto's
rule), between equally long ones the one whose tip has the lower hash (our choice: the
miners here find blocks within milliseconds of each other, and a first-seen tie-break, which
differs between nodes, would split the replicas for good). A miner abandons its own work as
soon as a block for its height that wins under this rule arrives (the first valid block
found wins the race, unless another is found before it has spread). A block
is written to a node's ledger once ``confirmations`` blocks are mined on it (the ledger
never rolls back), and a losing fork is dropped. After the last round the publisher pays
every device a share of the reward pool proportional to the samples of its recorded updates
(data size, as in BlockFL; `node.schemes.rewards.proportional`), closes the task, and the
miners mine ``confirmations`` empty blocks on the closing block, so that it reaches every
ledger; then vanilla's ``stop`` ends the run.

Parameters: ``scheme: {name: blockfl, difficulty_bits: 12, confirmations: 1,
settle_s: 0.5, slice_attempts: 4096}`` (`scheme.BlockflParams`). ``ledger.consensus`` must
be ``single`` (the default; the chain's consensus is the scheme's proof of work). Not modelled (our
choices): mining rewards, the miners' cross-verification of update accuracy, and a
malfunctioning MEC's own behaviour (a miner cannot alter an update: each is signed).
"""

from node.schemes.blockfl.scheme import BlockflParams, BlockflScheme

__all__ = ["BlockflParams", "BlockflScheme"]
