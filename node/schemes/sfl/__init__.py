"""The `sfl` scheme: SFL (paper 004, §III–§V): a task contract with committed test data,
local differential privacy and rewards for qualified devices only.

How it works
------------
Nodes: the publisher ("pub") is the task publisher and the central aggregator (the paper
names two entities; one node here, our choice); devices train; MECs relay the devices'
updates one by one and, with ``ledger.consensus: pbft``, are the chain's validators and
evaluators (the paper's miners). With ``single`` the publisher writes every block and is the
only evaluator. One chain, "main", kept by every node (devices as light replicas); no D2D
links (the plan refuses them). The contract is `node.contracts.sfl`.

1. Initialisation (§III-A). The publisher splits its test set into ``test_groups`` data
   groups of ``group_size`` samples, each one blob whose SHA-256 it commits, with the hash of
   a seed that fixes the disclosure order (`testdata`), and posts ``sfl.init`` (initial
   model hash, criterion "accuracy", ``threshold``, the reward pool escrowed from its
   ``ledger.reward_pool``, rounds, group hashes, seed commitment, evaluators and quorum).
2. Round r (§III-B). The publisher sends the global model the chain names
   (`get_global_model()`) down through the MECs (vanilla's ``global``). A device trains
   (D-SGD), clips and noises its update (``privacy:``, the Gaussian mechanism,
   `node.learning.privacy`), optionally evaluates it on its own data against the threshold
   and withholds it if below (``self_evaluate``), and sends it with its signed
   ``sfl.submit_model_update`` (blob hash, samples, payee) to its MEC, which checks it and
   forwards it unaveraged. When all MECs answered or the deadline passed, the publisher
   commits the verified submissions and ``sfl.disclosure_test_data`` (the round's group,
   checked on chain against its commitment; it closes the submission window). With
   ``disclose: false`` it never discloses and the evaluators use the fallback data (the
   paper's "training dataset").
3. Evaluation (the validators re-run it). Each evaluator (`evaluation.Evaluator`: the
   publisher, or each PBFT MEC when the publisher asks with ``sfl.evaluate``) reads the
   round from its own replica's state, fetches the blobs it lacks, counts every update's
   correct predictions on the disclosed group (deterministic: one torch thread, fixed
   order) and signs ``sfl.evaluate_local_model``; the contract decides when a quorum (n - f
   of the evaluators) posted identical results; a dissenting evaluation after that fails.
   Updates at or above the threshold qualify. The publisher posts
   ``sfl.aggregate_model_update`` (FedAvg of the qualified, in device-id order); each
   evaluator recomputes it and its accuracy and signs ``sfl.evaluate_model``; the quorum's
   hash must be the aggregator's, else the aggregate is refused and the global model stays.
4. The end (§III-C). The publisher tells the devices (``sfl.done``); each signs
   ``finalize_contract()`` (an unqualified device's call fails on chain: it is paid nothing;
   a qualified one is paid its share once, by qualified rounds); the publisher submits them
   and ``sfl.post_evaluation`` (the results; the unallocated rest refunded), records what
   each device was paid (``sfl_rewards`` in its metrics) and stops the run.

The baseline of the paper (plain FedAvg with the same population, with and without DP) is
this scheme with ``threshold: 0`` (every submitted update qualifies), or the ``vanilla``
scheme with ``aggregator: fedavg`` and the same ``faults:`` and ``privacy:`` (no pre-training).
"""

from node.schemes.sfl.scheme import SflParams, SflScheme

__all__ = ["SflParams", "SflScheme"]
