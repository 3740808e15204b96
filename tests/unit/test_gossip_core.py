"""The gossip core, one input at a time: fan-out, dedup, TTL, validation, pull, bounds."""

from __future__ import annotations

from collections import Counter

import pytest

from node.gossip import (
    ACCEPT,
    Deliver,
    GossipAction,
    GossipConfig,
    GossipNode,
    IHave,
    Item,
    IWant,
    Send,
    Topic,
    Verdict,
    encode,
    ignore,
    reject,
)

T = "lmuc"
PEERS = ("a", "b", "c", "d", "e", "f")


class Hook:
    """A validation hook that accepts items starting with b"ok" and counts its calls."""

    def __init__(self, verdict_for_bad: Verdict | None = None) -> None:
        self.calls = 0
        self.bad = verdict_for_bad or reject("bad_signature")

    def __call__(self, data: bytes) -> Verdict:
        self.calls += 1
        return ACCEPT if data.startswith(b"ok") else self.bad


def node(hook: Hook | None = None, deliver: bool = True, **cfg: object) -> GossipNode:
    config = GossipConfig(**cfg)  # type: ignore[arg-type]
    return GossipNode("me", [Topic(T, PEERS, hook or Hook(), deliver)], config)


def sends(actions: list[GossipAction]) -> list[Send]:
    return [a for a in actions if isinstance(a, Send)]


def dsts(actions: list[GossipAction], kind: type = Item) -> list[str]:
    return sorted(a.dst for a in sends(actions) if isinstance(a.message, kind))


# ---- push, fan-out, dedup, ttl ------------------------------------------------------------


def test_publish_pushes_to_all_when_fanout_covers_the_degree() -> None:
    n = node(fanout=6, ttl=5)
    out = n.publish(T, b"ok1", 0.0)
    assert dsts(out) == list(PEERS)
    assert {s.message for s in sends(out)} == {Item(T, 5, b"ok1")}
    assert n.publish(T, b"ok1", 1.0) == []  # already seen
    assert n.stats.published == 1


def test_fanout_is_seeded_deterministic_and_differs_per_item() -> None:
    picks = [dsts(node(fanout=2, seed=b"s").publish(T, b"ok%d" % i, 0.0)) for i in range(20)]
    again = [dsts(node(fanout=2, seed=b"s").publish(T, b"ok%d" % i, 0.0)) for i in range(20)]
    other = [dsts(node(fanout=2, seed=b"t").publish(T, b"ok%d" % i, 0.0)) for i in range(20)]
    assert picks == again
    assert all(len(p) == 2 for p in picks)
    assert len({tuple(p) for p in picks}) > 5
    assert picks != other


def test_a_new_valid_item_is_delivered_once_and_relayed_with_ttl_minus_one() -> None:
    n = node(fanout=10)
    out = n.handle("a", Item(T, 4, b"ok"), 0.0)
    assert [a for a in out if isinstance(a, Deliver)] == [
        Deliver(T, GossipNode.item_id(b"ok"), b"ok", "a")
    ]
    assert dsts(out) == ["b", "c", "d", "e", "f"]  # not back to the sender
    assert {s.message.ttl for s in sends(out)} == {3}  # type: ignore[union-attr]
    assert n.handle("b", Item(T, 4, b"ok"), 0.1) == []
    assert (n.stats.received, n.stats.delivered, n.stats.relayed, n.stats.duplicates) == (
        1,
        1,
        5,
        1,
    )


def test_ttl_one_is_delivered_but_not_relayed_and_ttl_is_clamped() -> None:
    n = node(ttl=6)
    assert dsts(n.handle("a", Item(T, 1, b"ok-last"), 0.0)) == []
    out = n.handle("a", Item(T, 255, b"ok-far"), 0.0)
    assert {s.message.ttl for s in sends(out)} == {5}  # type: ignore[union-attr]


def test_relay_only_topic_relays_without_delivering() -> None:
    n = node(deliver=False)
    out = n.handle("a", Item(T, 3, b"ok"), 0.0)
    assert not any(isinstance(a, Deliver) for a in out)
    assert dsts(out)
    assert n.stats.delivered == 0 and n.stats.received == 1


# ---- validation ---------------------------------------------------------------------------


def test_invalid_items_are_dropped_counted_remembered_and_never_relayed() -> None:
    hook = Hook()
    n = node(hook)
    assert n.handle("a", Item(T, 5, b"forged"), 0.0) == []
    assert n.handle("b", Item(T, 5, b"forged"), 1.0) == []
    assert hook.calls == 1  # the second copy was refused from memory
    assert n.stats.invalid == Counter({"bad_signature": 2})
    assert n.stats.invalid_from == Counter({"a": 1, "b": 1})
    assert n.stats.received == 0 and n.stats.relayed == 0
    assert n.handle("c", IHave(T, (GossipNode.item_id(b"forged"),), 5), 2.0) == []  # not asked


def test_ignored_items_are_not_remembered() -> None:
    hook = Hook(ignore("unknown_parent"))
    n = node(hook)
    n.handle("a", Item(T, 5, b"later"), 0.0)
    n.handle("a", Item(T, 5, b"later"), 1.0)
    assert hook.calls == 2
    assert n.stats.invalid == Counter({"unknown_parent": 2})


def test_a_raising_validator_counts_as_a_rejection() -> None:
    def boom(data: bytes) -> Verdict:
        raise ValueError("bad bytes")

    n = GossipNode("me", [Topic(T, PEERS, boom)])
    assert n.handle("a", Item(T, 5, b"x"), 0.0) == []
    assert n.stats.invalid == Counter({"validator_error": 1})


def test_unknown_topics_malformed_bytes_and_oversize_items_are_dropped() -> None:
    n = node(max_item_bytes=10)
    assert n.handle("a", Item("other", 3, b"ok"), 0.0) == []
    assert n.handle_bytes("a", b"\x93garbage", 0.0) == []
    assert n.handle_bytes("a", encode(Item(T, 3, b"ok" + bytes(20))), 0.0) == []
    assert n.handle("a", Item(T, 3, b"ok" + bytes(20)), 0.0) == []
    assert n.stats.dropped == Counter({"unknown_topic": 1, "malformed": 1, "oversize": 2})
    with pytest.raises(ValueError, match="max_item_bytes"):
        n.publish(T, bytes(11), 0.0)
    with pytest.raises(ValueError, match="not subscribed"):
        n.publish("other", b"ok", 0.0)


# ---- pull ---------------------------------------------------------------------------------


def test_ihave_of_an_unknown_item_is_answered_with_iwant_then_pulled() -> None:
    n = node()
    item_id = GossipNode.item_id(b"ok-pull")
    assert n.handle("a", IHave(T, (item_id,), 3), 0.0) == [Send("a", IWant(T, (item_id,)))]
    assert n.handle("b", IHave(T, (item_id,), 3), 0.1) == []  # already asked
    n.handle("a", Item(T, 3, b"ok-pull"), 0.2)
    assert n.stats.pulled == 1 and n.pending_wants() == 0
    assert n.handle("a", IHave(T, (item_id,), 0), 0.3) == []  # ttl 0: nothing to ask for
    assert n.handle("c", IHave(T, (bytes(32),), 0), 0.3) == []


def test_an_unanswered_want_moves_to_the_next_announcer_then_gives_up() -> None:
    n = node(want_timeout_s=1.0, max_want_tries=3, announce_ticks=0)
    item_id = GossipNode.item_id(b"ok-lost")
    n.handle("a", IHave(T, (item_id,), 3), 0.0)
    n.handle("b", IHave(T, (item_id,), 3), 0.0)
    assert n.tick(0.5) == []
    assert n.tick(1.1) == [Send("b", IWant(T, (item_id,)))]
    assert n.tick(2.2) == [Send("a", IWant(T, (item_id,)))]
    assert n.tick(3.3) == []
    assert n.stats.want_failed == 1 and n.pending_wants() == 0


def test_a_held_back_want_is_spared_by_a_pushed_copy() -> None:
    n = node(want_delay_s=0.5, announce_ticks=0)
    item_id = GossipNode.item_id(b"ok-pushed")
    assert n.handle("a", IHave(T, (item_id,), 3), 0.0) == []  # no IWANT yet
    assert n.pending_wants() == 1
    assert n.tick(0.2) == []
    n.handle("b", Item(T, 3, b"ok-pushed"), 0.3)  # the push overtook the delay
    assert n.tick(0.6) == [] and n.pending_wants() == 0
    assert (n.stats.wants_spared, n.stats.pulled, n.stats.iwant_msgs) == (1, 0, 0)


def test_a_topic_may_pull_at_once_beside_topics_that_hold_wants_back() -> None:
    n = GossipNode(
        "me",
        [Topic(T, PEERS, Hook()), Topic("blocks", PEERS, Hook(), want_delay_s=0.0)],
        GossipConfig(want_delay_s=0.5),
    )
    item_id = GossipNode.item_id(b"ok-block")
    assert n.handle("a", IHave(T, (item_id,), 3), 0.0) == []  # held back
    assert n.handle("a", IHave("blocks", (item_id,), 3), 0.0) == [
        Send("a", IWant("blocks", (item_id,)))
    ]
    with pytest.raises(ValueError, match="want_delay_s"):
        n.subscribe(Topic("bad", PEERS, Hook(), want_delay_s=-1.0))


def test_a_held_back_want_asks_the_first_announcer_when_its_delay_ends() -> None:
    n = node(want_delay_s=0.5, want_timeout_s=1.0, announce_ticks=0)
    item_id = GossipNode.item_id(b"ok-late")
    n.handle("a", IHave(T, (item_id,), 3), 0.0)
    n.handle("b", IHave(T, (item_id,), 3), 0.1)
    assert n.tick(0.4) == []
    assert n.tick(0.6) == [Send("a", IWant(T, (item_id,)))]
    assert n.tick(1.5) == []
    assert n.tick(1.7) == [Send("b", IWant(T, (item_id,)))]  # a's answer overdue
    n.handle("b", Item(T, 3, b"ok-late"), 1.8)
    assert (n.stats.wants_spared, n.stats.pulled) == (0, 1)


def test_each_further_ask_waits_want_backoff_times_longer() -> None:
    n = node(want_timeout_s=1.0, want_backoff=2.0, max_want_tries=3, announce_ticks=0)
    item_id = GossipNode.item_id(b"ok-slow")
    assert n.handle("a", IHave(T, (item_id,), 3), 0.0) == [Send("a", IWant(T, (item_id,)))]
    n.handle("b", IHave(T, (item_id,), 3), 0.0)
    assert n.tick(1.1) == [Send("b", IWant(T, (item_id,)))]  # after 1 s
    assert n.tick(3.0) == []  # the second ask waits 2 s
    assert n.tick(3.2) == [Send("a", IWant(T, (item_id,)))]
    assert n.tick(7.1) == []  # the third, 4 s
    assert n.tick(7.3) == [] and n.stats.want_failed == 1


def test_iwant_is_served_a_bounded_number_of_times_per_peer_and_window() -> None:
    n = node(max_serves_per_peer=2)
    n.handle("a", Item(T, 5, b"ok-served"), 0.0)
    want = IWant(T, (GossipNode.item_id(b"ok-served"), bytes(32)))
    assert n.handle("b", want, 0.1) == [Send("b", Item(T, 4, b"ok-served"))]
    assert len(n.handle("b", want, 0.2)) == 1
    assert n.handle("b", want, 0.3) == []
    assert len(n.handle("b", want, 2.2)) == 1  # a new window (want_timeout_s = 2)
    assert n.stats.served == 3
    assert n.stats.dropped == Counter({"want_unknown": 4, "serve_limit": 1})


def test_pending_wants_are_bounded_per_peer() -> None:
    n = node(max_pending_per_peer=2)
    ids = tuple(bytes([i]) * 32 for i in range(3))
    assert n.handle("a", IHave(T, ids, 3), 0.0) == [Send("a", IWant(T, ids[:2]))]
    assert n.stats.dropped["want_overflow"] == 1
    assert n.handle("b", IHave(T, ids[2:], 3), 0.0) == [Send("b", IWant(T, ids[2:]))]


def test_announcements_follow_the_first_ticks_then_powers_of_two() -> None:
    n = node(announce_ticks=2, fanout=1)
    n.handle("a", Item(T, 5, b"ok"), 0.0)
    announced = [t for t in range(1, 18) if dsts(n.tick(float(t)), IHave)]
    assert announced == [1, 2, 4, 8, 16]
    tick_one = node(announce_ticks=1, fanout=1)
    tick_one.handle("a", Item(T, 5, b"ok"), 0.0)
    assert dsts(tick_one.tick(1.0), IHave) == ["b", "c", "d", "e", "f"]  # not to "a"


def test_a_copy_with_more_hops_left_upgrades_the_ttl_with_id_only_announcements() -> None:
    n = node(fanout=6, ttl=10, announce_ticks=0)
    n.handle("a", Item(T, 1, b"ok"), 0.0)  # a squashed copy: not relayed
    assert n.handle("b", Item(T, 10, b"ok"), 0.1) == []  # told at the next heartbeat
    assert n.stats.ttl_upgrades == 1 and n.stats.duplicates == 1
    out = n.tick(0.2)
    assert dsts(out, IHave) == ["a", "c", "d", "e", "f"]  # a holds it with ttl 1 only
    assert {s.message for s in sends(out)} == {IHave(T, (GossipNode.item_id(b"ok"),), 9)}
    assert n.handle("c", Item(T, 10, b"ok"), 0.3) == []  # no gain: nothing sent
    assert n.tick(0.4) == []


def test_the_upgrades_of_one_heartbeat_go_in_one_ihave_per_neighbour() -> None:
    n = node(fanout=6, ttl=10, announce_ticks=0)
    items = [b"ok%d" % i for i in range(3)]
    for data in items:
        n.handle("a", Item(T, 1, data), 0.0)  # squashed copies
        n.handle("b", Item(T, 10, data), 0.1)  # then each one's honest copy
    out = n.tick(0.2)
    assert dsts(out, IHave) == ["a", "c", "d", "e", "f"]
    ids = {GossipNode.item_id(d) for d in items}
    assert all(set(s.message.ids) == ids and s.message.ttl == 9 for s in sends(out))


def test_items_of_different_ttls_go_to_a_neighbour_in_one_ihave() -> None:
    n = node(fanout=1, ttl=10, announce_ticks=1)
    n.handle("a", Item(T, 10, b"ok-near"), 0.0)
    n.handle("a", Item(T, 4, b"ok-far"), 0.0)
    out = n.tick(1.0)
    assert dsts(out, IHave) == ["b", "c", "d", "e", "f"]  # one IHAVE each
    want = {GossipNode.item_id(b"ok-near"): 9, GossipNode.item_id(b"ok-far"): 3}
    assert all(s.message.announced() == want for s in sends(out))


def test_each_id_of_an_ihave_is_handled_with_its_own_ttl() -> None:
    n = node(fanout=6, ttl=10, announce_ticks=0)
    n.handle("a", Item(T, 2, b"ok-held"), 0.0)  # held with relay ttl 1
    held, lacking, spent = (GossipNode.item_id(d) for d in (b"ok-held", b"ok-new", b"ok-0"))
    out = n.handle("b", IHave(T, (held, lacking, spent), 9, (9, 5, 0)), 0.1)
    assert out == [Send("b", IWant(T, (lacking,)))]  # ttl 0: nothing to ask for
    assert n.stats.ttl_upgrades == 1  # held: raised to 8 by b's 9
    assert all(s.message.announced() == {held: 8} for s in sends(n.tick(0.2)))


def test_with_lazy_fanout_an_upgrade_reaches_low_holders_at_once_and_the_rest_later() -> None:
    n = node(fanout=6, ttl=10, lazy_fanout=1, announce_ticks=8, announce_backoff=False)
    item_id = GossipNode.item_id(b"ok")
    n.handle("a", Item(T, 1, b"ok"), 0.0)  # a squashed copy
    n.handle("c", IHave(T, (item_id,), 1), 0.0)  # c holds it with no hop left
    n.handle("b", Item(T, 10, b"ok"), 0.1)  # the honest copy: relay ttl 9
    first = dsts(n.tick(0.2), IHave)
    assert {"a", "c"} < set(first) <= {"a", "c", "d", "e", "f"}  # low holders + one lazy
    assert len(first) == 3
    later = [dsts(n.tick(0.2 + k), IHave) for k in range(1, 8)]
    assert all(len(peers) == 1 for peers in later)  # re-announced, one neighbour a heartbeat
    assert set(first).union(*later) == {"a", "c", "d", "e", "f"}


def test_lazy_fanout_announces_to_that_many_neighbours_a_heartbeat_chosen_anew() -> None:
    n = node(fanout=1, ttl=5, lazy_fanout=2, announce_ticks=8, announce_backoff=False)
    for i in range(4):
        n.handle("a", Item(T, 5, b"ok%d" % i), 0.0)
    chosen = [dsts(n.tick(1.0 + k), IHave) for k in range(8)]
    assert all(len(c) == 2 and "a" not in c for c in chosen)  # a sent them: it holds them
    assert len({tuple(c) for c in chosen}) > 1  # not the same two every heartbeat
    # every announced IHAVE carries all the items the neighbour is not known to hold
    out = node(fanout=1, ttl=5, lazy_fanout=2)
    for i in range(4):
        out.handle("a", Item(T, 5, b"ok%d" % i), 0.0)
    assert all(len(s.message.ids) == 4 for s in sends(out.tick(1.0)))


# ---- bounds and expiry --------------------------------------------------------------------


def test_seen_entries_expire_and_the_store_is_bounded_in_bytes() -> None:
    n = node(seen_ttl_s=10.0, history_s=5.0, max_store_bytes=25)
    ids = [GossipNode.item_id(b"ok%d" % i + bytes(10)) for i in range(3)]
    for i in range(3):
        n.handle("a", Item(T, 5, b"ok%d" % i + bytes(10)), float(i))
    assert n.get(T, ids[0], 2.0) is None  # evicted for bytes
    assert n.get(T, ids[2], 2.0) is not None
    assert n.has(T, ids[0], 2.0)
    n.tick(20.0)
    assert not n.has(T, ids[2], 20.0) and n.get(T, ids[2], 20.0) is None
    n.handle("a", Item(T, 5, b"ok2" + bytes(10)), 20.0)
    assert n.stats.received == 4  # past seen_ttl_s a resend counts as new


def test_counters_as_a_flat_record() -> None:
    n = node()
    n.handle("a", Item(T, 5, b"bad"), 0.0)
    record = n.stats.as_record()
    assert record["gossip_invalid"] == {"bad_signature": 1}
    assert record["gossip_invalid_from"] == {"a": 1}
    assert record["gossip_received"] == 0
    assert set(record) >= {"gossip_relayed", "gossip_duplicates", "gossip_pulled", "gossip_served"}


@pytest.mark.parametrize(
    "bad",
    [
        {"ttl": 0},
        {"ttl": 256},
        {"fanout": 0},
        {"want_timeout_s": 0.0},
        {"want_delay_s": -0.1},
        {"want_backoff": 0.5},
        {"max_ids": 0},
        {"max_store_bytes": 0},
    ],
)
def test_config_is_validated(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="gossip"):
        GossipConfig(**bad)  # type: ignore[arg-type]


def test_bad_topic_names_are_refused() -> None:
    with pytest.raises(ValueError, match="topic"):
        GossipNode("me", [Topic("Bad Topic", PEERS, Hook())])


def test_set_peers_replaces_the_neighbours() -> None:
    n = node(fanout=10)
    n.set_peers(T, ["x", "y", "me"])
    assert n.peers(T) == ("x", "y")
    assert dsts(n.publish(T, b"ok", 0.0)) == ["x", "y"]
    with pytest.raises(ValueError, match="not subscribed"):
        n.set_peers("other", ["x"])
