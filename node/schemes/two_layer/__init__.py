"""The `two-layer` scheme (papers/000): a local model update chain (LMUC) per MEC over D2D and
a task-specific global model update chain (GMUC) among the task's MECs.

How it works
------------
Chains (`scheme.TwoLayerScheme.plan`): ``gmuc-t0``, the task's GMUC shard (one per task:
see isolation sharding below): genesis members the publisher, the task's MECs and their
devices; finality `Committee.bft` over the task's MECs and the publisher, who keep it.
``lmuc-<mec>`` per MEC: genesis member only the MEC (as the task's local "publisher": it
opens the task and closes rounds there); its devices register (Step 1, below); finality
`Committee.bft` over the MEC and its first ``full_devices`` devices ("full"; the others
are "light" and only relay). Every device of the MEC keeps a replica (our choice, see
below).

Registration and task (Steps 1-2), before round 1:

- Each device sends its MEC ``tl.join`` (`messages.JoinRequest`, repeated every second
  until the MEC's ``tl.joined``): its Ed25519 signature of its registration (its LMUC's
  chain id, its id, "device": `identity.registration_message`) and its response to the
  task request — its resources (samples: its training set's size; CPU MHz and energy
  budget J: `common.declared_resources`, drawn from the seed, our choice) and its opinion
  of the publisher — with its signature of `gmuc_request.response_message`.
- The MEC checks both signatures against the roster (refused: a counted ``bad_join``),
  and once every device of its own is heard (or at the start-up timeout) submits their
  ``identity.enroll`` transactions to its LMUC (one PBFT block; the contract checks each
  registration signature again) and sends their ``gmuc.respond`` transactions, signed by
  it, to the publisher (``tl.responses``). The LMUC's runtime refuses any transaction
  from a key it does not register, so an unregistered device's update never reaches a
  block (and the MEC never selects it). A device heard after round 1 began is registered
  but not forwarded as a worker (the call for workers is over; our choice).
- The publisher, once every node said hello and every MEC sent its responses, submits
  ``task.publish`` (reward pool, rounds), ``gmuc.request`` (``min_samples``,
  ``min_cpu_mhz``, ``min_energy_j``) and the responses in one GMUC block
  (`node.contracts.gmuc_request`: each device's signature checked against its GMUC key,
  whether it meets the requirements recorded), and sends round 1 once that block is
  committed; a MEC holds round 1 until its replicas hold the request and its enrollments.
- Still in genesis (our choice): the committees' keys, in each chain's finality rule —
  blocks are certified from height 1, before anyone could register; the MECs on the GMUC
  (its voters and committee); the task's devices on the GMUC (the chain checks their
  response signatures and pays their rewards against those keys; their LMUC membership
  is what registration decides).

Round r:

1. The publisher sends ``global{r, model}`` to the task's MECs (vanilla's publisher).
2. The MEC submits to its LMUC the close of round r-1 (``task.record_global``: the decided
   model) — or, before round 1, ``task.publish`` — and selects its workers: among the
   devices registered on its LMUC whose response on the GMUC meets the requirements
   (`gmuc_request.eligible`), those whose reputation on the GMUC (the reputation contract,
   as of the blocks it holds) is at least ``reputation_threshold``, best first, at most
   ``top_k`` (0: no limit). Each gets a task packet (``tl.task``, `tasks.seal_task`: the
   task with 60% of the round's deadline and the model's hash, encrypted to the device and
   signed by the MEC, bound to the task and round) with the model beside it; the device
   opens and checks it before training.
3. A device trains and publishes its signed ``task.record_update`` transaction and blob in
   its group's D2D gossip (gossip-fedavg's `GossipService` topics: updates and blocks); the
   MEC takes each from the gossip. When all selected devices answered, or at the deadline
   (a MEC that selected nobody relays its empty round at once), the MEC submits the update
   transactions to its LMUC: the MEC (PBFT primary, proposer)
   and its full devices order them into a block by PBFT (`PbftValidator`) and sign it. Every
   LMUC block is spread to the light devices by gossip.
4. Cross-chain: the MEC sends the certified block (header, certificate, transactions;
   ``tl.lmuc``; no blobs) to the task's other MECs. Each checks it as a light client of
   that LMUC first (`crosschain.checked_block`: Merkle root, certificate against that
   LMUC's committee from the run's chain configs, signer of each update a device of that
   LMUC), then fetches the update blobs the block names that it does not hold, on demand
   (`node.ledger.sync.ChainSync.fetch_blob` on its GMUC replica's sync: ``blob.get`` to the
   relaying MEC, then to the task's other MECs in turn — one that fetched it already
   serves it from its blob store; the next peer after a silence of half the time left to
   the vote deadline (at least 5 s: an honest MEC busy judging its updates answers late),
   a reply without the blob, or bytes over the update's signed size or not hashing to its
   key, each counted in the sync's failures), and uses the block's updates once every
   blob is in (`crosschain.block_updates`) — a MEC cannot alter an update once it is in a
   certified block. A block whose blob no MEC gives (every one asked in vain) is left out
   of the round at once: its updates are not used, the MEC's ``round`` record names the
   blob under ``withheld``, and the drop ``lmuc_blob_missing`` is counted; the withholder,
   whose own aggregate does use them, is outvoted when the others agree.
5. When every MEC's block is in or given up (or at 90% of the deadline, when the fetches
   still running are cancelled: the blocks not whole by then are left out, their owed
   blobs counted in ``unfetched``) each MEC aggregates all the updates in the canonical
   order (LMUC ids sorted, block order) with the scenario's aggregator and sends its
   signed ``gmuc.vote{task_id, round, aggregate, contributors}`` with the aggregate's
   bytes to the publisher (``tl.vote``), with its signed
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
  transactions with its nonces. With ``ledger.device_replica: light`` (the default) it is a
  light replica (`node.ledger.light`: certified headers only; `NodePlan.light_chains`); with
  ``full`` they keep and execute the whole LMUC.
- A relaying MEC that withholds a blob from some MECs and serves it to others can split
  the honest MECs' votes only if a MEC asked for it as a fallback has not fetched it yet
  (a MEC asks each peer once); the split is outvoted or leaves the round undecided, and
  both are recorded.
- The MEC runs two PBFT validators (GMUC and LMUC); the LMUC's names its timers
  ``lmuc:pbft:*`` (`PbftValidator(timer_prefix=...)`).
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
- Cooperative sharding (``tasks: N, cooperative: true``): the N shards are sub-tasks of one
  task. Each shard's MECs decide its aggregate by their votes as above; the shard's
  publisher reports it, with its workers' samples (their GMUC responses), to
  `publisher.Cooperative`, which, once every shard's is in, averages them weighted by
  samples (`common.combine_shards`) — for FedAvg exactly the model one FedAvg over every
  shard's updates gives (it is linear), so splitting the MECs into shards (smaller PBFT
  groups, concurrent votes) does not change what is learned — and every shard records that
  one model as its round's (``task.record_global``) and trains it next. Each device works
  in its MEC's shard only, so the GMUC keeps one reputation record per device across the
  shards (the reputation contract keys records by device, for every task and shard).
- Aggregators that need accuracies get the accuracy each MEC measures for every update on
  the validation samples (the same as for reputation events; every MEC alike).
- The D2D gossip's timing (the paper gives none): a heartbeat of 1 s (gossipsub's); a
  device that hears of an update it lacks waits 2 s for a pushed copy before pulling it
  and 3 s for an answer, doubled for each further ask (`TwoLayerParams.want_delay_s`,
  `want_timeout_s`). At 50 devices per MEC on 2 cores, asking at once with a 0.2 s
  heartbeat and a 1 s timeout made every update travel several extra times and filled the
  memory (README, Fig. 5b).
- Incentives (Table 1): `incentives` (its docstring has the protocol and our choices).
- Not yet: the opinion in a device's response is recorded, not used.
"""

from node.schemes.two_layer.scheme import TwoLayerParams, TwoLayerScheme

__all__ = ["TwoLayerParams", "TwoLayerScheme"]
