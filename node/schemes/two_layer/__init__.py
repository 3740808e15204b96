"""The `two-layer` scheme (papers/000): a local model update chain (LMUC) per MEC over D2D and
a task-specific global model update chain (GMUC) among the task's MECs.

How it works
------------
Chains (`scheme.TwoLayerScheme.plan`): ``gmuc-t0``, the task's GMUC shard (one per task:
see isolation sharding below): genesis members the publisher, the task's MECs and their
devices; finality `Committee.bft` over the task's MECs and the publisher, who keep it.
``lmuc-<mec>`` per MEC: genesis members the MEC (as the task's local "publisher": it opens
the task and closes rounds there) and its devices; finality `Committee.bft` over the MEC
and its first ``full_devices`` devices ("full"; the others are "light" and only relay).
Every device of the MEC keeps a replica (our choice, see below).

Round r:

1. The publisher sends ``global{r, model}`` to the task's MECs (vanilla's publisher).
2. The MEC submits to its LMUC the close of round r-1 (``task.record_global``: the decided
   model) — or, before round 1, ``task.publish`` — and selects its workers: the devices
   whose reputation on the GMUC (the reputation contract, as of the blocks it holds) is at
   least ``reputation_threshold``, best first, at most ``top_k`` (0: no limit). Each gets a
   task packet (``tl.task``, `tasks.seal_task`: the task with 60% of the round's deadline
   and the model's hash, encrypted to the device and signed by the MEC, bound to the task
   and round) with the model beside it; the device opens and checks it before training.
3. A device trains and publishes its signed ``task.record_update`` transaction and blob in
   its group's D2D gossip (gossip-fedavg's `GossipService` topics: updates and blocks); the
   MEC takes each from the gossip. When all selected devices answered, or at the deadline,
   the MEC submits the update transactions to its LMUC: the MEC (PBFT primary, proposer)
   and its full devices order them into a block by PBFT (`PbftValidator`) and sign it. Every
   LMUC block is spread to the light devices by gossip.
4. Cross-chain: the MEC sends the certified block (header, certificate, transactions;
   ``tl.lmuc``) and then the update blobs, one per message (``tl.blob``), to the task's
   other MECs. Each checks it as a light client
   of that LMUC (`crosschain.round_updates`: Merkle root, certificate against that LMUC's
   committee from the run's chain configs, signer of each update a device of that LMUC,
   blob hashes) — a MEC cannot alter an update once it is in a certified block.
5. When every MEC's block is in (or at 90% of the deadline) each MEC aggregates all the
   updates in the canonical order (LMUC ids sorted, block order) with the scenario's
   aggregator and sends its signed ``gmuc.vote{task_id, round, aggregate, contributors}``
   with the aggregate's bytes to the publisher (``tl.vote``), with its signed
   ``reputation.record`` of its own devices: an update is a negative event when its accuracy
   on the validation samples (the test set's first 1,000, as vanilla's) is more than 0.25
   below the round's median and below half of it (our choice), else a positive one. A
   malfunctioning or tampering MEC (the edge faults of `node.roles.threats`) votes another
   aggregate.
6. The publisher takes the aggregate a majority of the MECs voted (`gmuc.vote_quorum`),
   submits the votes, reputation records and its ``task.record_global`` (naming no
   contributors: their updates are on the LMUCs) in one GMUC block, which the MECs and the
   publisher order by PBFT; the gmuc contract decides the same hash on chain and records the
   dissenting MECs as outvoted (state and event). An outvoted aggregate never becomes the
   global model. The publisher evaluates, records and starts round r+1 as vanilla's does.

At the end the publisher's ``stop`` (the GMUC's final height) reaches the MECs, which tell
their devices the LMUC's final height.

Our choices where the paper is silent, and deviations from it:

- The votes travel through the publisher, which submits them as one batch to the GMUC's
  PBFT: `PbftValidator` builds candidate blocks from identical submissions, so each block
  has a single submitter (as in vanilla's PBFT mode). A publisher that withholds a vote
  cannot change the decision: the contract counts the votes in the block.
- Light devices keep an LMUC replica (fed by gossip, not voting): they sign their update
  transactions with its nonces. It works as a light replica (`node.ledger.light`: certified
  headers only; the sim test opens it so), but the node entry point opens every chain full
  until a plan can say which chains a node keeps light.
- Update blobs are pushed after the relayed LMUC block rather than fetched by ``blob.get``
  on demand (the ledger's sync has no public "fetch this blob" call yet).
- The GMUC's PBFT committee is the task's MECs and the publisher: PBFT needs 4 replicas
  and the paper's case study has 3 MECs. The vote quorum is a strict majority of the
  task's MECs (the contract's rule; PBFT's 2f+1 of 3 MECs would be 1).
- A round's reputation events reach the GMUC with round r's block, which commits while
  round r+1 is under way: a device judged in round r is (de)selected from round r+2.
- Isolation sharding (``tasks: N``): the MECs, in topology order, are cut into N
  consecutive groups (at least 3 MECs each); task i has its own GMUC shard ``gmuc-t<i>``
  (its MECs, their devices and the publisher as members; ordered by its MECs and the
  publisher; the reward pool split evenly, the remainder to the first) and learns its own
  model. The publisher runs one task publisher per shard (`publisher.ShardedPublisherRole`,
  each on a `publisher.TaskView` of the node); their records carry ``task_chain``. Every
  shard records the scenario's one task id on its own chain.
- Not yet: registration and response transactions (keys are in the chains' genesis),
  incentives (Table 1), cooperative sharding, aggregators that need accuracies.
"""

from node.schemes.two_layer.scheme import TwoLayerParams, TwoLayerScheme

__all__ = ["TwoLayerParams", "TwoLayerScheme"]
