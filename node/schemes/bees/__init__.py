"""The `bees` and `b-ei` schemes: BEES (paper 003, §III-B to §IV) and its B-EI baseline.

How it works
------------
Nodes: the edge servers (ES) are the topology's MECs, the user equipment (UE) its devices;
the publisher is the testbed's round clock and evaluator (the paper has none: it proposes
no block, it follows the chain). One chain, kept by the ES and the publisher (UEs keep
none), with `ProofOfLearning` finality over the ES keys; genesis registers every node.

Round r (`scheme.BeesScheme`; deadlines are fractions of ``round_deadline_s``, our choice):

1. The publisher sends ``bees.round`` to the ES (round 1: the initial model and its signed
   ``bees.configure {m}``: M = ``top_m``, 10 for bees, 1 for b-ei). Each ES takes round
   r-1's global model from its chain (the blob ``bees.aggregate`` names; fetched on demand
   if it lacks it) and forwards it to its UEs (vanilla's ``global``).
2. Each UE (`ue.UeRole`; profile drawn from the seed by `model.sample_profiles`) decides
   with `model.decide` (b-ei: `model.decide_bei`, always local): local -> trains (torch)
   and sends its weights (``bees.local``); offload -> sends its real training samples as
   raw arrays (``bees.offload``, padded to ``offload_scale`` x 80 MB), and its ES trains a
   copy of the global model on them; sit out -> sends nothing (logged, a metrics row). The
   ES answers each transfer with ``bees.ack`` (the measured transfer time), from which the
   UE computes E^T (eq. 8); E^C is eq. 7 from its profile; the battery drains by E_total.
3. Each ES (`es.EsRole`), once every UE answered (or at 60% of the deadline), evaluates the
   updates on the first 1,000 test samples, signs its ``bees.report`` (n_k, c_k, B_k for
   the next election) and a ``bees.update`` per UE, and sends them with the weights to the
   other ES (``bees.share``).
4. With every share (or at 75% of the deadline) each ES runs the PoL round
   (`election.Election` around `node.consensus.pol.PolCore`, ranking = the contract's
   ``ranking(state)``, I = n·c/B): the winner re-evaluates every update (`audit`), leaves
   out one whose claimed accuracy is more than ``accuracy_tolerance`` off, averages the
   contract's top-M (eq. 3) and proposes [configure (round 1), elect, reports, updates,
   aggregate]; the others validate it (ledger, contract) and re-verify it (accuracies,
   recomputed global hash) before appending; a silent winner is replaced by the next rank
   after ``pol_timeout_s``. Each ES that accepts a block tells the publisher
   (``bees.accepted``); the publisher appends a block once most ES accepted it (our
   choice: it follows their majority, never a lone proposer), fetches the global model,
   evaluates it, writes the round record and starts round r+1.

An ES that is behind (round r+1 starts before it decided round r: the publisher needs only
a majority) catches up by the ledger's sync (full ledger and contract validation, no
re-evaluation). An ES missing a share fetches the weights a block names (``blob.get``: the
proposer, then the other ES; each ES keeps its own UEs' weights in its blob store). Faults:
a malicious UE's behaviour applies to what it trains on or offloads and what it sends; an
ES's ``tamper``/``malfunction`` to its UEs' updates before it evaluates and signs them.

Not modelled (our choices, the paper is silent): what a UE's update costs the ES to
receive, the return of the trained model to an offloading UE, any ES battery drain but the
training of offloaded data, rewards. The UE's emulated link is the topology's cellular link
(its own Shannon-rate draw), not the rate of the UE's BEES profile.
"""

from node.schemes.bees.scheme import BeesParams, BeesScheme, BeiParams, BeiScheme

__all__ = ["BeesParams", "BeesScheme", "BeiParams", "BeiScheme"]
