"""Where a training step's time goes: vaelab's loop against the plain loop with fused Adam, op by op.

    python benchmarks/profile_step.py [--algorithm aevb] [--images 12000] [--threads 1] [--data-dir ../shared/data]

Both loops train one epoch at batch 100 on the same images (``torch.profiler``, CPU) after an
unprofiled warm-up epoch each; the table lists, per step, the self time of the operators where
the two differ most, then the sum of every operator's self time against the wall time: what the
operators do not account for is Python and dispatch outside them. Profiling adds its own cost to
every operator call, so the wall times here are above the training benchmark's; read the
differences, not the totals. vaelab's operators include its run's set-up (the model's
initialisation, the checkpoint, a one-image evaluation), listed under their own names; its wall
time is the epoch's alone.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter

import torch
from torch.profiler import ProfilerActivity, profile

from baselines import PlainVAE, plain_aevb_epoch, plain_iwae_epoch, plain_rws_epoch, plain_wake_sleep_epoch
from run import LARGE_K, _images, _vaelab_epoch_seconds

PLAIN = {
    "aevb": plain_aevb_epoch,
    "wake-sleep": plain_wake_sleep_epoch,
    "iwae": lambda model, x, fused: plain_iwae_epoch(model, x, k=LARGE_K, fused=fused),
    "rws": lambda model, x, fused: plain_rws_epoch(model, x, k=LARGE_K, fused=fused),
}


def profiled(run) -> tuple[float, Counter]:
    """(wall seconds of the epoch, {operator: self CPU microseconds}) of ``run()``, which may
    return its epoch's own seconds (vaelab's loop times its epoch without the run's set-up)."""
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        started = time.perf_counter()
        epoch_seconds = run()
        wall = time.perf_counter() - started
    return epoch_seconds or wall, Counter({event.key: event.self_cpu_time_total for event in profiler.key_averages()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algorithm", default="aevb", choices=sorted(PLAIN))
    parser.add_argument("--images", type=int, default=12000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", default=os.environ.get("VAELAB_DATA"))
    parser.add_argument("--rows", type=int, default=15, help="operators listed (default: 15)")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images, source = _images("train", args.images, args.data_dir)
    steps = args.images // 100
    loops = {
        "vaelab": lambda: _vaelab_epoch_seconds(args.algorithm, images, "fp32"),
        "plain, fused Adam": lambda: PLAIN[args.algorithm](PlainVAE(), images, fused=True),
    }
    for run in loops.values():
        run()  # warm-up: one-time imports and allocations are nobody's step
    results = {name: profiled(run) for name, run in loops.items()}
    (vaelab_wall, vaelab_ops), (plain_wall, plain_ops) = results.values()
    print(f"{args.algorithm}, batch 100, {steps} steps of {source}, {args.threads} thread(s); microseconds per step")
    print(f"{'operator':<44} {'vaelab':>9} {'plain':>9} {'difference':>11}")
    names = sorted(vaelab_ops.keys() | plain_ops.keys(), key=lambda name: -abs(vaelab_ops[name] - plain_ops[name]))
    for name in names[: args.rows]:
        print(f"{name[:44]:<44} {vaelab_ops[name] / steps:9.1f} {plain_ops[name] / steps:9.1f} {(vaelab_ops[name] - plain_ops[name]) / steps:+11.1f}")
    for label, vaelab_value, plain_value in (("all operators' self time", vaelab_ops.total(), plain_ops.total()),
                                             ("wall time (profiled)", 1e6 * vaelab_wall, 1e6 * plain_wall)):
        print(f"{label:<44} {vaelab_value / steps:9.1f} {plain_value / steps:9.1f} {(vaelab_value - plain_value) / steps:+11.1f}")


if __name__ == "__main__":
    main()
