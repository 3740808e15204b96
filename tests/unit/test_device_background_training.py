"""Vanilla's device trains off the loop (`ctx.run_background`): a newer round's global model
that comes while it trains is trained next, and the stale round's result is dropped (counted
as ``stale_training``), never sent; a training that fails is counted, and the device goes on.

The device's learner, ledger and context are stand-ins; the jobs run when the test says."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np

from node.learning.train import TrainResult
from node.learning.weights import weights_to_bytes
from node.schemes.vanilla import DeviceRole
from node.schemes.vanilla.messages import DeviceUpdate, GlobalModel

REFERENCE = {"w": np.zeros(3, dtype=np.float32)}


class FakeLearner:
    def __init__(self) -> None:
        self.loaded: list[float] = []
        self.trained: list[int] = []
        self.fail_round: int | None = None

    def load(self, weights: dict[str, np.ndarray]) -> None:
        self.loaded.append(float(weights["w"][0]))
        self.current = {k: v.copy() for k, v in weights.items()}

    def train(self, round_no: int, x: Any, y: Any) -> TrainResult:
        if round_no == self.fail_round:
            raise RuntimeError("out of memory")
        self.trained.append(round_no)
        self.current["w"] += 1
        return TrainResult(samples=4, loss=0.5, seconds=0.1, steps=1, accuracy=0.75)

    def weights(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self.current.items()}


class FakeContext:
    """Sends, drops and background jobs recorded; a job runs when `finish_job` says."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[[], Any], Callable[[Any, BaseException | None], None]]]
        self.jobs = []
        self.sent: list[DeviceUpdate] = []
        self.drops: list[str] = []
        tx = SimpleNamespace(to_bytes=lambda: b"tx")
        self.replica = SimpleNamespace(
            light=False,
            transaction=lambda type_, payload: tx,
            blobs=SimpleNamespace(put_behind=lambda key, blob: None),
        )
        self.config = SimpleNamespace(task_id="t")
        self.me = SimpleNamespace(parent="mec0")
        self.records: list[dict[str, Any]] = []
        self.metrics = SimpleNamespace(
            write=lambda event, **fields: self.records.append({"event": event, **fields})
        )
        self.clock_ms = 1_000

    def now(self) -> float:
        return 0.0

    def wall_ms(self) -> int:
        self.clock_ms += 10  # every reading 10 ms later
        return self.clock_ms

    def drop(self, reason: str, detail: str = "") -> None:
        self.drops.append(reason)

    def send(self, dst: str, msg: object) -> None:
        assert isinstance(msg, DeviceUpdate)
        self.sent.append(msg)

    def run_background(
        self, fn: Callable[[], Any], on_done: Callable[[Any, BaseException | None], None]
    ) -> None:
        self.jobs.append((fn, on_done))

    def finish_job(self) -> None:
        fn, on_done = self.jobs.pop(0)
        try:
            result = fn()
        except Exception as exc:
            on_done(None, exc)
        else:
            on_done(result, None)


def _device() -> tuple[DeviceRole, FakeLearner]:
    role = DeviceRole()
    learner = FakeLearner()
    role.learner = learner  # type: ignore[assignment]
    role.reference = REFERENCE
    role.threats = SimpleNamespace(  # type: ignore[assignment]
        training_data=lambda r: (None, np.zeros(4, dtype=np.int64), "honest"),
        outgoing=lambda r, trained, global_weights: trained,
        label_emd=lambda y: 0.0,
    )
    role.round = 0
    role._emd = None
    role._training = None
    role._next = None
    return role, learner


def _global(round_no: int, value: float) -> GlobalModel:
    return GlobalModel(round_no, weights_to_bytes({"w": np.full(3, value, np.float32)}), 60.0)


def test_a_newer_round_during_training_is_trained_next_and_the_stale_result_dropped() -> None:
    role, learner = _device()
    ctx = FakeContext()
    role._train(ctx, _global(1, 10.0))  # type: ignore[arg-type]
    assert len(ctx.jobs) == 1 and learner.trained == []  # off the loop: not trained yet
    role._train(ctx, _global(2, 20.0))  # type: ignore[arg-type]
    role._train(ctx, _global(3, 30.0))  # type: ignore[arg-type]
    assert len(ctx.jobs) == 1  # one training at a time; the newest round waits
    ctx.finish_job()  # round 1 ends: stale (round 3 came meanwhile), dropped, round 3 starts
    assert ctx.sent == [] and ctx.drops == ["stale_training"]
    assert len(ctx.jobs) == 1
    ctx.finish_job()
    assert learner.trained == [1, 3] and learner.loaded == [10.0, 30.0]  # round 2 skipped
    assert [u.round for u in ctx.sent] == [3]
    assert role._training is None and ctx.jobs == []


def test_a_training_that_fails_is_counted_and_the_next_round_trains() -> None:
    role, learner = _device()
    learner.fail_round = 1
    ctx = FakeContext()
    role._train(ctx, _global(1, 1.0))  # type: ignore[arg-type]
    ctx.finish_job()
    assert ctx.drops == ["training_failed"] and ctx.sent == []
    role._train(ctx, _global(2, 2.0))  # type: ignore[arg-type]
    ctx.finish_job()
    assert [u.round for u in ctx.sent] == [2]


def test_the_round_record_says_when_the_global_model_came_and_the_update_left() -> None:
    role, _ = _device()
    ctx = FakeContext()
    role._train(ctx, _global(1, 1.0))  # type: ignore[arg-type]
    ctx.finish_job()

    (record,) = ctx.records
    assert (record["round"], record["global_received_ms"], record["update_sent_ms"]) == (
        1,
        1_010,  # when the global model reached the role
        1_020,  # when the trained update was handed to the transport
    )
