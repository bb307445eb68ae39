"""Run vaelab's CLI and SIGKILL this process at the n-th event of one kind: a test hook for crash safety.

    python tests/kill_at_event.py KIND N VAELAB_ARGUMENTS...

Events are counted from the first checkpoint this process writes (so every attempt moves the run
on by at least one epoch) and are things the run does, never moments on a clock, so a kill lands
at the same point of the run on a fast machine and a slow one:
    step:        after the n-th optimiser step (mid-epoch, the optimiser's state updated);
    evaluation:  at the n-th batch of an L_k evaluation (mid-evaluation);
    fsync:       at the n-th file written, before it is synced: after a metrics row is appended
                 but before the checkpoint of its epoch, or with the new checkpoint complete in its
                 temporary file but not yet renamed over the old one.
The hooks wrap library functions from outside (os.fsync, os.replace, the optimiser's global
step hook and :func:`vaelab.estimators.bounds.importance_weighted_bound`); the run's code is unchanged.
"""

from __future__ import annotations

import os
import signal
import sys

from torch.optim.optimizer import register_optimizer_step_post_hook

import vaelab.estimators.bounds
from vaelab.cli import main
from vaelab.runio import CHECKPOINT_FILE

KINDS = ("step", "evaluation", "fsync")


def install(kind: str, count: int) -> None:
    """Arm at the first checkpoint renamed into place; then SIGKILL at the ``count``-th ``kind`` event."""
    if kind not in KINDS or count < 1:
        raise SystemExit(f"kill_at_event: KIND is one of {', '.join(KINDS)} and N >= 1 (got {kind} {count})")
    state = {"armed": False, "remaining": count}

    def event(name: str) -> None:
        if state["armed"] and name == kind:
            state["remaining"] -= 1
            if state["remaining"] == 0:
                os.kill(os.getpid(), signal.SIGKILL)

    real_replace, real_fsync, real_bound = os.replace, os.fsync, vaelab.estimators.bounds.importance_weighted_bound

    def replace(source, target, *args, **kwargs):
        real_replace(source, target, *args, **kwargs)
        state["armed"] = state["armed"] or os.fspath(target).endswith(CHECKPOINT_FILE)

    def fsync(descriptor):
        event("fsync")
        real_fsync(descriptor)

    def importance_weighted_bound(*args, **kwargs):
        event("evaluation")
        return real_bound(*args, **kwargs)

    os.replace, os.fsync = replace, fsync
    vaelab.estimators.bounds.importance_weighted_bound = importance_weighted_bound  # evaluate_bound looks it up here
    register_optimizer_step_post_hook(lambda optimizer, args, kwargs: event("step"))


if __name__ == "__main__":
    install(sys.argv[1], int(sys.argv[2]))
    sys.exit(main(sys.argv[3:]))
