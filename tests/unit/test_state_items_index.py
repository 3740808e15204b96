"""`State.items` lists a namespace equal to a scan of the whole state, whatever sequence of
writes, deletes, rollbacks and copies (a guard for any index that replaces the scan)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from node.contracts.state import State

NAMESPACES = ("a", "b", "c")
KEYS = ("k0", "k1", "k2", "k3")

op = st.one_of(
    st.tuples(
        st.just("set"), st.sampled_from(NAMESPACES), st.sampled_from(KEYS), st.integers(0, 3)
    ),
    st.tuples(st.just("delete"), st.sampled_from(NAMESPACES), st.sampled_from(KEYS), st.just(0)),
    st.tuples(st.just("begin"), st.just(""), st.just(""), st.just(0)),
    st.tuples(st.just("rollback"), st.just(""), st.just(""), st.just(0)),
    st.tuples(st.just("commit"), st.just(""), st.just(""), st.just(0)),
    st.tuples(st.just("copy"), st.just(""), st.just(""), st.just(0)),
    st.tuples(st.just("items"), st.sampled_from(NAMESPACES), st.just(""), st.just(0)),
)


def scan(state: State, ns: str) -> list[tuple[str, object]]:
    return [(key, state.get(n, key)) for n, key, _ in state.to_rows() if n == ns]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(op, max_size=40))
def test_items_equals_a_full_scan_after_any_writes(ops: list[tuple[str, str, str, int]]) -> None:
    state = State()
    for action, ns, key, value in ops:
        if action == "set":
            state.set(ns, key, value)
        elif action == "delete":
            state.delete(ns, key)
        elif action == "begin":
            state.begin()
        elif action in ("rollback", "commit") and state.in_transaction:
            getattr(state, action)()
        elif action == "copy":
            state = state.copy()
        elif action == "items":
            assert state.items(ns) == scan(state, ns)
    for ns in NAMESPACES:
        assert state.items(ns) == scan(state, ns)


def test_items_of_an_unknown_namespace_is_empty_and_a_copy_keeps_its_own_index() -> None:
    state = State()
    state.set("a", "x", 1)
    assert state.items("zzz") == []
    copy = state.copy()
    copy.set("a", "y", 2)
    copy.delete("a", "x")
    assert state.items("a") == [("x", 1)]
    assert copy.items("a") == [("y", 2)]
