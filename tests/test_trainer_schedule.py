"""The learning-rate schedules, as a function of the run's step (so a resumed run continues at
the same place): the classic staircase decay by epochs, and cosine decay after a warm-up."""

from __future__ import annotations

import pytest

from trainer.config import TrainConfig

pytest.importorskip("tensorflow")

from trainer.loop.optimization import make_schedule  # noqa: E402


def test_classic_decay_by_0_16_every_30_epochs_in_stairs() -> None:
    # 1000 examples at batch 40: 25 steps per epoch, so a stair every 750 steps.
    schedule = make_schedule(TrainConfig(lr=0.1), steps_per_epoch=25.0, total_steps=3000)
    assert float(schedule(0)) == pytest.approx(0.1)
    assert float(schedule(749)) == pytest.approx(0.1)
    assert float(schedule(750)) == pytest.approx(0.016)
    assert float(schedule(1500)) == pytest.approx(0.1 * 0.16**2)


def test_cosine_decay_after_a_linear_warm_up() -> None:
    config = TrainConfig(lr=0.2, lr_schedule="cosine", warmup_epochs=2)
    schedule = make_schedule(config, steps_per_epoch=50.0, total_steps=1100)
    assert float(schedule(0)) == pytest.approx(0.0)
    assert float(schedule(50)) == pytest.approx(0.1)  # half-way through the warm-up
    assert float(schedule(100)) == pytest.approx(0.2)
    assert float(schedule(600)) == pytest.approx(0.1, rel=1e-3)  # half-way down the cosine
    assert float(schedule(1100)) == pytest.approx(0.0, abs=1e-6)
