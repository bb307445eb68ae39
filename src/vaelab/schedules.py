"""Learning-rate schedules: the learning rate of each epoch as a function of the epoch alone.

A schedule has no state of its own: the learning rate of epoch ``e`` is computed from ``e`` and the
config, and set on the optimiser at the start of the epoch. A checkpoint records the epoch, so a
resumed run continues the schedule exactly where it stopped.
"""

from __future__ import annotations

from vaelab.config import TrainConfig

# Burda et al. 2015, section 5: "for i = 0..7, 3^i passes at learning rate 0.001 * 10^(-i/7)".
BURDA_STAGES = 8
BURDA_DECADES_PER_STAGE = 1 / 7


def burda_stage(epoch: int) -> int:
    """The stage i of 1-based ``epoch``: stage i spans the 3^i epochs after the first
    1 + 3 + ... + 3^(i-1) = (3^i - 1) / 2; e.g. epoch 1 -> 0, 2..4 -> 1, 5..13 -> 2.

    Beyond the published 3,280 epochs (i = 0..7) the stages simply continue (i = 8, 9, ...).
    """
    if epoch < 1:
        raise ValueError(f"epochs count from 1 (got {epoch})")
    stage = 0
    while epoch > (3 ** (stage + 1) - 1) // 2:
        stage += 1
    return stage


def burda_epochs(last_stage: int) -> int:
    """Epochs of stages 0..``last_stage``: (3^(last_stage+1) - 1) / 2, e.g. 364 for i = 0..5, 3,280 for 0..7."""
    return (3 ** (last_stage + 1) - 1) // 2


def learning_rate_at(config: TrainConfig, epoch: int) -> float:
    """The learning rate of 1-based ``epoch`` under ``config.lr_schedule``.

    ``constant``: ``config.learning_rate`` throughout. ``burda``: ``config.learning_rate *
    10^(-i/7)`` in stage i (Burda, Grosse & Salakhutdinov 2015, "Importance weighted autoencoders").
    """
    if config.lr_schedule == "constant":
        return config.learning_rate
    if config.lr_schedule == "burda":
        return config.learning_rate * 10 ** (-burda_stage(epoch) * BURDA_DECADES_PER_STAGE)
    raise ValueError(f"unknown learning-rate schedule {config.lr_schedule!r}")  # config checks the name first
