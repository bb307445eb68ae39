"""vaelab's benchmarks: evaluation and training speed measured side by side with the baselines.

    python benchmarks/run.py [--quick] [--out benchmarks/results] [--data-dir ../shared/data]

Every evaluation runs in a fresh subprocess (so peak memory is its own), in round-robin order over
the implementations, repeated; the tables report medians and ratios against the baseline of the
same run. Training implementations take turns within one process, segment by segment of the
epoch, so that a slow spell of a shared machine falls on all of them alike. Writes
``results.json`` and ``results.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from vaelab.config import DataConfig, ExperimentConfig, TrainConfig
from vaelab.runio import cpu_description

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

LARGE_K = 50  # samples per image of the k-sample objectives (IWAE, RWS) in the training benchmark
LARGE_K_ALGORITHMS = ("iwae", "rws")


# ---------------------------------------------------------------- one measurement (in a subprocess)

def _images(split: str, count: int, data_dir: str | None) -> tuple[torch.Tensor, str]:
    """``count`` binarized 784-pixel images: MNIST when its files are there, else Bernoulli(0.13) noise."""
    from vaelab.config import DataConfig, ExperimentConfig
    from vaelab.data import load_dataset
    from vaelab.errors import DataError
    from vaelab.evaluation.protocol import evaluation_images

    try:
        dataset = load_dataset("mnist", data_dir, download=False)
    except DataError:
        generator = torch.Generator().manual_seed(0)
        return torch.bernoulli(torch.full((count, 784), 0.13), generator=generator), "random (MNIST not found)"
    images, _ = evaluation_images(ExperimentConfig(data=DataConfig(dataset="mnist")), dataset, split)
    return images[:count].contiguous(), "mnist"


def measure(task: str, k: int, count: int, threads: int, data_dir: str | None) -> dict:
    """Seconds and peak memory of one evaluation task: L_k of ``count`` test images, or the matmul floor."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    from baselines import PlainVAE, straightforward_bound

    from vaelab.builders import build_model
    from vaelab.config import ModelConfig
    from vaelab.estimators.bounds import DEFAULT_MAX_ROWS, evaluate_bound
    from vaelab.models.backend import ONEDNN_LINEAR, linear, matmul_precision

    images, source = _images("test", count, data_dir)
    baseline_mb = _reset_peak_memory()
    started = time.perf_counter()
    bound = float("nan")
    if task in ("eval-vaelab", "eval-vaelab-bf16"):
        model = build_model(ModelConfig(), 784, "bernoulli")
        with matmul_precision("bf16" if task.endswith("bf16") else "fp32"):
            bound = evaluate_bound(model, images, k, torch.Generator().manual_seed(0)).mean().item()
    elif task == "eval-straightforward":
        straightforward_bound(PlainVAE(), images, k)
    elif task == "eval-floor":  # the decoder's 512 -> 784 matmuls alone, same rows, same chunks, fastest backend
        layer = build_model(ModelConfig(), 784, "bernoulli").generative.logits
        hidden = torch.relu(torch.randn(DEFAULT_MAX_ROWS, 512))
        rows = count * k
        with torch.no_grad():
            for start in range(0, rows, DEFAULT_MAX_ROWS):
                linear(hidden[: min(DEFAULT_MAX_ROWS, rows - start)], layer)
    else:
        raise SystemExit(f"unknown task {task}")
    seconds = time.perf_counter() - started
    peak_mb = _status_mb("VmHWM")
    return {"seconds": seconds, "images": count, "peak_mb": peak_mb, "working_mb": peak_mb - baseline_mb, "data": source, "onednn": ONEDNN_LINEAR,
            "bound": bound}


# The training implementations of each algorithm, first the baseline of its ratios; "vaelab-X:bf16"
# is vaelab's loop with `--precision bf16`; "plain-X:fused" is the plain loop with Adam's fused
# kernel, vaelab's own optimiser, so vaelab's ratio to it is what vaelab adds beyond the optimiser.
TRAINING = {
    "aevb": ["plain-aevb", "plain-aevb:fused", "vaelab-aevb", "vaelab-aevb:bf16", "pyro-Trace_ELBO", "pyro-TraceMeanField_ELBO"],
    "wake-sleep": ["plain-wake-sleep", "plain-wake-sleep:fused", "vaelab-wake-sleep", "vaelab-wake-sleep:bf16"],
    "iwae": ["plain-iwae", "plain-iwae:fused", "vaelab-iwae", "vaelab-iwae:bf16", "pyro-RenyiELBO"],
    "rws": ["plain-rws", "plain-rws:fused", "vaelab-rws", "pyro-ReweightedWakeSleep"],
}


def measure_training(algorithm: str, count: int, threads: int, data_dir: str | None, with_pyro: bool, segments: int = 10) -> dict:
    """Seconds each implementation of ``algorithm`` takes for one epoch over ``count`` images.

    The epoch is cut into ``segments`` equal parts and the implementations take turns, part by
    part (in a rotating order), in this one process: a slow spell of a shared machine then falls
    on all of them alike instead of on whichever ran during it.

    Subnormal floats are flushed to zero for every implementation alike: the plain loops' BCE on
    MNIST's saturated pixels otherwise computes in subnormal arithmetic (the plain IWAE k=50 loop
    ran 7-9x slower for it), which would measure the x86 slow path, not the loops.
    """
    torch.set_flush_denormal(True)  # before set_num_threads, so the intra-op threads inherit it
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    from baselines import PlainVAE, plain_aevb_epoch, plain_iwae_epoch, plain_rws_epoch, plain_wake_sleep_epoch, pyro_svi_epoch

    images, source = _images("train", count, data_dir)
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])  # one-time imports (Adam's of torch._dynamo) are nobody's speed
    names = [name for name in TRAINING[algorithm] if (with_pyro or not name.startswith("pyro-")) and (bf16_kernels() or not name.endswith(":bf16"))]
    if with_pyro:
        import pyro  # noqa: F401
    plain = {
        "plain-aevb": plain_aevb_epoch,
        "plain-wake-sleep": plain_wake_sleep_epoch,
        "plain-iwae": lambda model, x, fused: plain_iwae_epoch(model, x, k=LARGE_K, fused=fused),
        "plain-rws": lambda model, x, fused: plain_rws_epoch(model, x, k=LARGE_K, fused=fused),
    }
    seconds = dict.fromkeys(names, 0.0)
    for index, part in enumerate(images.chunk(segments)):
        for name in names[index % len(names):] + names[: index % len(names)]:
            if name.startswith("vaelab-"):
                vaelab_algorithm, _, precision = name.removeprefix("vaelab-").partition(":")
                seconds[name] += _vaelab_epoch_seconds(vaelab_algorithm, part, precision or "fp32")  # the loop's own timing
                continue
            model = PlainVAE()  # built outside the timing, as vaelab's loop times its epoch alone
            started = time.perf_counter()
            if name.startswith("pyro-"):
                pyro_svi_epoch(model, part, name.removeprefix("pyro-"))
            else:
                plain_name, _, variant = name.partition(":")
                plain[plain_name](model, part, fused=variant == "fused")
            seconds[name] += time.perf_counter() - started
    return {"seconds": seconds, "images": count, "data": source}


def bf16_kernels() -> bool:
    """Whether this CPU has oneDNN bfloat16 kernels; without them (AVX2) a bf16 epoch takes 8-17x
    the fp32 one and is left out of the training benchmark, which says so."""
    from vaelab.models.backend import ONEDNN_LINEAR_BF16

    return ONEDNN_LINEAR_BF16


def _status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (Linux), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak_memory() -> float:
    """Reset the peak-RSS mark (Linux: clear_refs 5) so it measures from here; returns the current RSS in MB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_mb("VmRSS")


def _vaelab_epoch_seconds(algorithm: str, images: torch.Tensor, precision: str) -> float:
    """Seconds of one epoch of vaelab's own training loop on ``images``, matmuls in ``precision``.

    The loop is ``vaelab.training``'s; the dataset is swapped for the benchmark's images and the
    evaluation shrunk to one image so that only training is timed.
    """
    import tempfile

    from vaelab import training
    from vaelab.config import DataConfig, ExperimentConfig, TrainConfig
    from vaelab.data import Dataset, Split

    dataset = Dataset("mnist", {"train": Split(images, None), "test": Split(images[:1], None)}, (28, 28), "bernoulli", True, {})
    training.dataset_of = lambda *args, **kwargs: dataset  # the name the loop loads its data through
    num_samples = LARGE_K if algorithm in LARGE_K_ALGORITHMS else 1
    config = ExperimentConfig(
        data=DataConfig(dataset="mnist"),
        train=TrainConfig(algorithm=algorithm, num_samples=num_samples, epochs=1, eval_splits=("test",), eval_k=1, precision=precision),
    )
    with tempfile.TemporaryDirectory() as run_dir:
        result = training.train(config, run_dir, progress=False, device="cpu")
    return result.metrics[0]["epoch_seconds"]


# ---------------------------------------------------------------- active-unit folding and contention (issue 17)

def measure_folding(run_dir: str, k: int, count: int, threads: int, data_dir: str | None, segments: int = 10) -> dict:
    """Seconds of L_k over ``count`` test images of a trained run: folding (chosen automatically),
    the dense path, and the dense fp32 matmul floor (H -> D_x products of the same rows), taking
    turns segment by segment in this one process as the training benchmark does."""
    torch.set_num_threads(threads)
    from vaelab.estimators import folding
    from vaelab.estimators.bounds import DEFAULT_MAX_ROWS, evaluate_bound
    from vaelab.evaluation.evaluate import load_run
    from vaelab.models.backend import linear
    from vaelab.training import evaluation_images

    config, model, dataset, checkpoint = load_run(run_dir, data_dir)
    images = evaluation_images(config, dataset, "test")[0][:count]
    layer = model.generative.logits
    hidden = torch.relu(torch.randn(DEFAULT_MAX_ROWS, layer.in_features))

    def floor(part):
        rows = part.shape[0] * k
        with torch.no_grad():
            for start in range(0, rows, DEFAULT_MAX_ROWS):
                linear(hidden[: min(DEFAULT_MAX_ROWS, rows - start)], layer)

    names = ["floor", "folding", "dense"]
    seconds, bounds = dict.fromkeys(names, 0.0), {"folding": [], "dense": []}
    for index, part in enumerate(images.chunk(segments)):
        for name in names[index % 3:] + names[: index % 3]:
            started = time.perf_counter()
            if name == "floor":
                floor(part)
            else:
                with folding.folding_mode("auto" if name == "folding" else "never"):
                    bounds[name].append(evaluate_bound(model, part, k, torch.Generator().manual_seed(index)))
            seconds[name] += time.perf_counter() - started
    folded, dense = torch.cat(bounds["folding"]), torch.cat(bounds["dense"])
    with torch.no_grad():  # the crossing units of the first 100 images, and those their box bounds leave undecided, for the table
        decoder = folding.foldable_decoder(model)
        z = model.posterior(images[:100]).rsample((k,))[..., : decoder.weight1.shape[1]]
        low, high = folding.preactivation_range(decoder, z, DEFAULT_MAX_ROWS)
        bound_low, bound_high = folding.preactivation_bounds(decoder, z)
        scale = model.posterior(images).base_dist.scale
    return {"seconds": seconds, "images": count, "k": k, "epochs": checkpoint.get("epoch"), "mean_bound": folded.mean().item(),
            "max_difference": (folded - dense).abs().max().item(), "crossing": ((low < 0) & (high > 0)).sum(1).float().mean().item(),
            "undecided": ((bound_low < 0) & (bound_high > 0)).sum(1).float().mean().item(),
            "hidden": decoder.hidden, "posterior_sd": scale.median().item()}


def train_mnist_model(run_dir: Path, epochs: int, threads: int, data_dir: str | None) -> None:
    """Train the seed's 2-D model on MNIST (AEVB, ``epochs`` epochs) into ``run_dir`` unless it is there."""
    if (run_dir / "checkpoint.pt").exists():
        return
    command = [sys.executable, "-m", "vaelab", "train", "--dataset", "mnist", "--epochs", str(epochs), "--eval-every", str(epochs),
               "--eval-k", "1", "--eval-splits", "test", "--out", str(run_dir), "--no-progress", "--threads", str(threads)]
    subprocess.run(command + (["--data-dir", data_dir] if data_dir else []), check=True)


# A competing PyTorch process: a 784-512-2 autoencoder's training steps at PyTorch's default threads.
COMPETITOR = (
    "import torch\n"
    "net = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 784))\n"
    "opt = torch.optim.Adam(net.parameters())\n"
    "x = torch.rand(100, 784)\n"
    "while True:\n"
    "    loss = ((net(x) - x) ** 2).mean(); opt.zero_grad(); loss.backward(); opt.step()\n"
)


def measure_contention(command: list[str], variants: dict[str, tuple[list[str], dict[str, str]]], competitors: int = 2) -> list[dict]:
    """Seconds of ``command`` alone and beside ``competitors`` busy PyTorch processes, for each variant
    of ``variants`` (extra arguments, OpenMP settings); alone and contended runs alternate per variant.
    ``{out}`` in ``command`` becomes a fresh temporary folder for each run."""
    import tempfile

    base = {key: value for key, value in os.environ.items() if not key.startswith(("OMP_", "GOMP_"))}
    rows = []
    for name, (arguments, settings) in variants.items():
        row = {"policy": name}
        for condition in ("alone", "contended"):
            others = [subprocess.Popen([sys.executable, "-c", COMPETITOR], env=base) for _ in range(competitors if condition == "contended" else 0)]
            try:
                with tempfile.TemporaryDirectory() as out:
                    started = time.perf_counter()
                    subprocess.run([part.replace("{out}", out) for part in command + arguments], check=True, env={**base, **settings}, capture_output=True)
                    row[condition] = time.perf_counter() - started
            finally:
                for process in others:
                    process.kill()
                    process.wait()
        row["ratio"] = row["contended"] / row["alone"]
        print(f"  {name}: alone {row['alone']:.1f} s, beside {competitors} PyTorch processes {row['contended']:.1f} s ({row['ratio']:.2f}x)", flush=True)
        rows.append(row)
    return rows


# ---------------------------------------------------------------- the orchestration

def run_task(task: str, k: int, count: int, threads: int, data_dir: str | None, with_pyro: bool = False) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, __file__, "--task", task, "--k", str(k), "--count", str(count), "--threads", str(threads)]
    command += [] if with_pyro else ["--no-pyro"]
    if data_dir:
        command += ["--data-dir", data_dir]
    completed = subprocess.run(command, capture_output=True, text=True, env=env)
    if completed.returncode != 0:
        return {"error": completed.stderr.strip().splitlines()[-1] if completed.stderr.strip() else "failed"}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def round_robin(tasks: list[tuple[str, int, int, int]], repeats: int, data_dir: str | None) -> dict[tuple, dict]:
    """Run every task ``repeats`` times, interleaved; keep the median time and the largest memory."""
    runs: dict[tuple, list[dict]] = {task: [] for task in tasks}
    for repeat in range(repeats):
        for task in tasks:
            result = run_task(*task, data_dir)
            runs[task].append(result)
            print(f"  [{repeat + 1}/{repeats}] {task[0]:32} k={task[1]:<5} n={task[2]:<6} threads={task[3]}: "
                  f"{result.get('seconds', float('nan')):8.2f} s {result.get('error', '')}", flush=True)
    summary = {}
    for task, results in runs.items():
        ok = [r for r in results if "error" not in r]
        if not ok:
            summary[task] = {"error": results[0]["error"]}
            continue
        summary[task] = {**ok[0], "seconds": statistics.median(r["seconds"] for r in ok), "all_seconds": [r["seconds"] for r in ok],
                         "peak_mb": max(r["peak_mb"] for r in ok), "working_mb": max(r["working_mb"] for r in ok)}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat: a check that finishes in under 2 minutes")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--data-dir", default=os.environ.get("VAELAB_DATA"), help="folder with mnist/ (default: $VAELAB_DATA; random data otherwise)")
    parser.add_argument("--pyro", action=argparse.BooleanOptionalAction, default=True, help="include Pyro if it is installed")
    parser.add_argument("--repeats", type=int, help="runs of each measurement, interleaved; the median is reported (default: 3, quick: 1)")
    parser.add_argument("--sections", default=",".join(DEFAULT_SECTIONS),
                        help=f"comma-separated parts to run, of {','.join(SECTIONS)} (default: all but study, which takes about half an hour)")
    parser.add_argument("--fold-run", type=Path, help="trained 2-D MNIST run for the folding section (default: OUT/mnist-2d, trained if absent)")
    parser.add_argument("--fold-epochs", type=int, default=10, help="epochs of that model when it is trained here (default: 10)")
    parser.add_argument("--task", help=argparse.SUPPRESS)
    parser.add_argument("--k", type=int, default=1000, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=10000, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help="threads of each measurement (default: 2, or the CPU count if smaller); "
                        "1 on a machine that other jobs share")
    args = parser.parse_args()
    if args.task:
        if args.task.startswith("fold:"):
            print(json.dumps(measure_folding(args.task.removeprefix("fold:"), args.k, args.count, args.threads, args.data_dir)))
        elif args.task.startswith("train:"):
            with_pyro = args.pyro and _importable("pyro")
            print(json.dumps(measure_training(args.task.removeprefix("train:"), args.count, args.threads, args.data_dir, with_pyro)))
        else:
            print(json.dumps(measure(args.task, args.k, args.count, args.threads, args.data_dir)))
        return

    threads = args.threads or min(2, os.cpu_count() or 1)
    test_images, train_images, repeats = (1000, 5000, 1) if args.quick else (10000, 60000, 3)
    repeats = args.repeats or repeats
    eval_ks = (100,) if args.quick else (1000, 5000)
    have_pyro = args.pyro and _importable("pyro")
    results: dict[str, list[dict]] = {section: [] for section in SECTIONS}

    sections = set(args.sections.split(","))
    if sections - set(SECTIONS):
        raise SystemExit(f"--sections takes {', '.join(SECTIONS)} (got {args.sections})")
    print("evaluation: L_k over the test images")
    for k in eval_ks if "evaluation" in sections else ():
        tasks = [(name, k, test_images, threads) for name in ("eval-floor", "eval-vaelab", "eval-vaelab-bf16", "eval-straightforward")]
        if k > 1000 and not args.quick:
            tasks = tasks[:3]  # the straightforward version at k = 5000 needs ~5x the k = 1000 time; its ratio is the same
        summary = round_robin(tasks, repeats, args.data_dir)
        floor = summary[tasks[0]]["seconds"]
        for task, result in summary.items():
            results["evaluation"].append({"implementation": task[0].removeprefix("eval-"), "k": k, "images": test_images, **result,
                                          "vs_floor": result.get("seconds", float("nan")) / floor})

    print("training: one epoch at batch 100, the implementations taking turns in one process"
          + ("" if bf16_kernels() or "training" not in sections else "; bf16 left out: this CPU has no bfloat16 kernels"))
    for algorithm, names in TRAINING.items() if "training" in sections else ():
        count = train_images // 10 if algorithm in LARGE_K_ALGORITHMS else train_images  # k = 50 costs ~10x per image
        runs = []
        for repeat in range(repeats):
            result = run_task(f"train:{algorithm}", 1, count, threads, args.data_dir, have_pyro)
            runs.append(result)
            shown = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in result.get("seconds", {}).items())
            print(f"  [{repeat + 1}/{repeats}] {algorithm}: {shown or result.get('error')}", flush=True)
        ok = [run for run in runs if "error" not in run]
        if not ok:
            results["training"].append({"algorithm": algorithm, "implementation": "all", "error": runs[0]["error"]})
            continue
        label = f"{algorithm} k={LARGE_K}" if algorithm in LARGE_K_ALGORITHMS else algorithm
        for name in ok[0]["seconds"]:
            all_seconds = [run["seconds"][name] for run in ok]
            ratios = [run["seconds"][names[0]] / run["seconds"][name] for run in ok]  # within each run; names[0] is never Pyro
            fused_ratios = [run["seconds"][names[1]] / run["seconds"][name] for run in ok]  # names[1]: the plain loop, fused Adam
            results["training"].append({"algorithm": label, "implementation": name, "images": count, "data": ok[0]["data"],
                                        "seconds": statistics.median(all_seconds), "all_seconds": all_seconds,
                                        "images_per_second": count / statistics.median(all_seconds), "vs_baseline": statistics.median(ratios),
                                        "vs_fused": statistics.median(fused_ratios)})

    print("scaling: vaelab's evaluator against k, images and threads")
    base_k, base_n = (50, 500) if args.quick else (250, 2000)
    scaling = [("eval-vaelab", base_k * f, base_n, threads) for f in (1, 2, 4)] + [("eval-vaelab", base_k, base_n * f, threads) for f in (2, 4)]
    scaling += [("eval-vaelab", base_k, base_n, 1)] if threads > 1 else []
    for task, result in round_robin(scaling if "scaling" in sections else [], repeats, args.data_dir).items():
        results["scaling"].append({"k": task[1], "images": task[2], "threads": task[3], **result,
                                   "microseconds_per_sample": 1e6 * result["seconds"] / (task[1] * task[2])})

    if "folding" in sections:
        results["folding"] = folding_section(args, test_images, repeats)
    if "contention" in sections:
        print("contention: the main command alone and beside two competing PyTorch processes")
        command = [sys.executable, "-m", "vaelab", "compare", "--out", "{out}/study", "--no-progress"]
        command += ["--epochs", "1"] if args.quick else []
        results["contention"] = measure_contention(command, CONTENTION_VARIANTS)
    if "seeds" in sections:
        results["seeds"] = seeds_section(args.out / "seeds", args.quick, repeats, args.data_dir)
    if "study" in sections:
        results["study"] = [study_section(args.out / "mnist-study", args.quick, args.data_dir)]

    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"quick": args.quick, "torch": torch.__version__, "threads": threads, "cpu": cpu_description(), "pyro": have_pyro, "repeats": repeats}
    (args.out / "results.json").write_text(json.dumps({"meta": meta, **results}, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(meta, results))
    print((args.out / "results.md").read_text())


SECTIONS = ("evaluation", "training", "scaling", "folding", "contention", "seeds", "study")
DEFAULT_SECTIONS = SECTIONS[:-1]
# Variants of the main command in the contention section (extra arguments, environment): vaelab's default,
# its algorithms trained at once, one single-thread process each (vaelab.jobs), and one after the other in one
# process of PyTorch's default threads (OMP_WAIT_POLICY=PASSIVE, which the CLI sets on a busy machine: vaelab.threads).
CONTENTION_VARIANTS = {
    "vaelab's default: the algorithms at once, one process each, the CPUs shared out (1 thread each on 2 cores)": ([], {}),
    "--jobs 1: one after the other, one process of PyTorch's default threads": (["--jobs", "1"], {}),
}


def folding_section(args, test_images: int, repeats: int) -> list[dict]:
    """L_1000 on a trained 2-D MNIST model: folding, dense and the matmul floor, one thread."""
    run_dir = args.fold_run or args.out / "mnist-2d"
    print(f"folding: L_1000 over {test_images} MNIST test images on the trained 2-D model {run_dir}")
    train_mnist_model(run_dir, 1 if args.quick else args.fold_epochs, 1, args.data_dir)
    rows = []
    for repeat in range(repeats):
        result = run_task(f"fold:{run_dir}", 1000, test_images, 1, args.data_dir)
        if "error" in result:
            print(f"  [{repeat + 1}/{repeats}] {result['error']}")
            continue
        seconds = result["seconds"]
        print(f"  [{repeat + 1}/{repeats}] " + ", ".join(f"{name} {value:.2f} s" for name, value in seconds.items()), flush=True)
        rows.append({**result, "folding_vs_floor": seconds["folding"] / seconds["floor"], "dense_vs_floor": seconds["dense"] / seconds["floor"]})
    return rows


# Issue 32's configurations: (label, steps of each seed, quick steps); four seeds each.
SEED_CONFIGS = (("Burda one-layer IWAE k=5, batch 20", 150, 20), ("homework AEVB 784-512-2, batch 100", 100, 10))
SEEDS = (0, 1, 2, 3)


def seed_config(label: str, steps: int) -> ExperimentConfig:
    """The config of ``label`` (of :data:`SEED_CONFIGS`) cut to one epoch of ``steps`` steps on dynamic MNIST;
    its end-of-epoch evaluation is L_1 of 100 training images, outside the timed epoch."""
    import dataclasses

    from vaelab.studies.reproduce.presets import get_preset, row_config

    if label.startswith("Burda"):
        preset = get_preset("burda2015-1layer")
        config = row_config(preset, preset.row("iwae-k5"), "reduced")
    else:  # vaelab's defaults are the homework's model and training
        config = ExperimentConfig(data=DataConfig(dataset="mnist"), train=TrainConfig())
    train = dataclasses.replace(config.train, epochs=1, train_size=steps * config.train.batch_size, eval_k=1,
                                eval_splits=("train",), eval_train_size=100)
    return dataclasses.replace(config, train=train)


def _lone_seed(config: dict, run_dir: str, data_dir: str | None) -> float:
    """Train one seed with vaelab.training.train; its timed epoch in seconds (a vaelab.jobs job: importable, picklable)."""
    from vaelab.training import train

    result = train(ExperimentConfig.from_dict(config), run_dir, data_dir=data_dir, overwrite=True, progress=False)
    return next(row["epoch_seconds"] for row in result.metrics if row["kind"] == "train")


def _together(config: dict, seeds: list[int], data_dir: str | None, out_file: str | None = None) -> float:
    """Train ``seeds`` of ``config`` together (vaelab.batched) for its one epoch; its seconds, also written to
    ``out_file`` where given (a vaelab.jobs job: importable, picklable, its result read back from the file)."""
    from vaelab.batched import BatchedSeeds
    from vaelab.builders import dataset_of
    from vaelab.machine import flushing_subnormals

    config = ExperimentConfig.from_dict(config)
    batched = BatchedSeeds(config, seeds, dataset_of(config.data, data_dir))
    with flushing_subnormals():  # as train() computes
        started = time.perf_counter()
        for index in range(batched.start_epoch(1)):
            batched.step(index)
        seconds = time.perf_counter() - started
    if out_file:
        Path(out_file).write_text(json.dumps(seconds))
    return seconds


def seeds_section(out: Path, quick: bool, repeats: int, data_dir: str | None) -> list[dict]:
    """Four seeds of each of :data:`SEED_CONFIGS`: one after the other (vaelab.training.train, 1 and 2 threads),
    as two single-thread jobs at once (vaelab.jobs), together over stacked parameters (vaelab.batched, 1 and
    2 threads) and as two single-thread jobs of two seeds together each, taking turns ``repeats`` times; the seconds are the training epochs' alone (model building,
    data loading, process start-up and the end-of-epoch evaluation left out), medians over the repeats."""
    import dataclasses
    import shutil

    from vaelab.jobs import run_jobs

    def one_after_the_other(config, threads):
        torch.set_num_threads(threads)
        return sum(_lone_seed(dataclasses.replace(config, seed=seed).to_dict(), str(out / f"seed{seed}"), data_dir) for seed in SEEDS)

    def two_jobs(config, threads):
        # the jobs' epochs, summed and shared out over the two processes: 4 equal jobs keep both busy throughout
        jobs = [(dataclasses.replace(config, seed=seed).to_dict(), str(out / f"job{seed}"), data_dir) for seed in SEEDS]
        run_jobs(_lone_seed, jobs, processes=2, threads=1)
        return sum(json.loads((out / f"job{seed}" / "metrics.jsonl").read_text().splitlines()[0])["epoch_seconds"] for seed in SEEDS) / 2

    def together(config, threads):
        torch.set_num_threads(threads)
        return _together(config.to_dict(), list(SEEDS), data_dir)

    def two_jobs_together(config, threads):
        # two processes of one thread, each training half the seeds together: the longer of the two
        halves = [list(SEEDS[: len(SEEDS) // 2]), list(SEEDS[len(SEEDS) // 2 :])]
        out.mkdir(parents=True, exist_ok=True)
        run_jobs(_together, [(config.to_dict(), half, data_dir, str(out / f"half{index}.json")) for index, half in enumerate(halves)], processes=2, threads=1)
        return max(json.loads((out / f"half{index}.json").read_text()) for index in range(len(halves)))

    def narrow(config):
        # the same steps with every width cut to 8 and z to 2: what a step costs beyond its arithmetic
        return dataclasses.replace(config, model=dataclasses.replace(config.model, hidden=(8,) * len(config.model.hidden), latent_dim=2))

    variants = {"one after the other, 1 thread": (one_after_the_other, 1), "one after the other, 2 threads": (one_after_the_other, 2),
                "2 jobs at once, 1 thread each": (two_jobs, 1), "together (batched), 1 thread": (together, 1),
                "together (batched), 2 threads": (together, 2), "2 jobs at once, 2 seeds together in each, 1 thread each": (two_jobs_together, 1),
                "per-step overhead floor: one after the other, 1 thread, widths 8": (lambda config, threads: one_after_the_other(narrow(config), threads), 1),
                "per-step overhead floor: together (batched), 1 thread, widths 8": (lambda config, threads: together(narrow(config), threads), 1)}
    rows = []
    for label, steps, quick_steps in SEED_CONFIGS:
        steps = quick_steps if quick else steps
        config = seed_config(label, steps)
        print(f"seeds: {label}, {len(SEEDS)} seeds x {steps} steps, the variants taking turns", flush=True)
        together(seed_config(label, 2), 1)  # first calls (imports, allocations) outside the timings
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        for repeat in range(repeats):
            for name, (measure_variant, threads) in variants.items():
                seconds[name].append(measure_variant(config, threads))
                print(f"  [{repeat + 1}/{repeats}] {name}: {seconds[name][-1]:.2f} s", flush=True)
        shutil.rmtree(out, ignore_errors=True)
        # each repeat's ratio to that repeat's faster one-after-the-other setting: turns taken close in time share the machine's load
        sequential = [min(seconds[name][repeat] for name in variants if name.startswith("one after")) for repeat in range(repeats)]
        load = os.getloadavg()[1]  # the machine's 5-minute load: these timings are of a shared machine
        for name, values in seconds.items():
            median = statistics.median(values)
            rows.append({"config": label, "variant": name, "load_average": load, "seeds": len(SEEDS), "steps": steps, "seconds": median, "all_seconds": values,
                         "seed_steps_per_second": len(SEEDS) * steps / median,
                         "vs_best_sequential": statistics.median(value / best for value, best in zip(values, sequential))})
    torch.set_num_threads(1)
    return rows


def study_section(study_dir: Path, quick: bool, data_dir: str | None) -> dict:
    """The homework's MNIST study end to end (``vaelab compare --dataset mnist --eval-train-size 10000``,
    the CLI's defaults: on a CPU one process per algorithm, the CPUs shared out), timed from a fresh
    directory, with each algorithm's split into training (its epoch seconds) and in-training
    evaluation (its eval seconds); the rest (start-up, the bound curves, figures, report) is the
    wall time less the longest algorithm's (the sum of them, where they ran one after the other). ``quick``: 1 epoch on 1000 training images, L_10: a
    check that it runs."""
    import shutil

    shutil.rmtree(study_dir, ignore_errors=True)
    command = [sys.executable, "-m", "vaelab", "compare", "--dataset", "mnist", "--out", str(study_dir), "--no-progress"]
    quick_protocol = ["--epochs", "1", "--train-size", "1000", "--eval-train-size", "100", "--eval-k", "10", "--curve-images", "100"]
    command += quick_protocol if quick else ["--eval-train-size", "10000"]
    command += ["--data-dir", data_dir] if data_dir else []
    print(f"study: {' '.join(command[2:])}", flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - started
    algorithms, final = {}, {}
    for path in sorted(study_dir.glob("*/metrics.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        algorithms[path.parent.name] = {"training_seconds": sum(row["epoch_seconds"] for row in rows if row["kind"] == "train"),
                                        "evaluation_seconds": sum(row["eval_seconds"] for row in rows if row["kind"] == "eval")}
        for row in rows:
            if row["kind"] == "eval" and row["split"] == "test":
                final[row["algorithm"]] = {"epoch": row["epoch"], "k": row["k"], "bound": row["bound"], "stderr": row["bound_stderr"]}
    from vaelab.jobs import processes_and_threads

    at_once = processes_and_threads(len(algorithms), device="auto")[0] > 1  # as the CLI decided
    runs = [sum(times.values()) for times in algorithms.values()]
    longest = max(runs) if at_once else sum(runs)
    result = {"wall_seconds": wall, "algorithms": algorithms, "at_once": at_once, "other_seconds": wall - longest, "final_test": final}
    split = "; ".join(f"{name}: training {times['training_seconds']:.0f} s, evaluation {times['evaluation_seconds']:.0f} s"
                      for name, times in algorithms.items())
    print(f"  {wall:.0f} s ({split}; {'at once' if at_once else 'one after the other'}; the rest {wall - longest:.0f} s)", flush=True)
    return result


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def markdown(meta: dict, results: dict) -> str:
    data = next((row["data"] for rows in results.values() for row in rows if row.get("data")), "?")
    lines = [f"# vaelab benchmarks ({'quick' if meta['quick'] else 'full'})", "",
             f"torch {meta['torch']}, {meta['threads']} threads; {meta['cpu']['model']} ({meta['cpu']['logical_cpus']} CPUs, "
             f"{meta['cpu']['capability']}); median of {meta['repeats']}; data: {data}.", "",
             "## Evaluation: L_k over the test images (seed model 784-512-2)", "",
             "| implementation | k | images | seconds | vs fp32 matmul floor | peak MB | working MB | mean L_k (untrained model) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results["evaluation"]:
        lines.append(f"| {r['implementation']} | {r['k']} | {r['images']} | {r.get('seconds', float('nan')):.2f} | {r['vs_floor']:.2f}x | "
                     f"{r.get('peak_mb', float('nan')):.0f} | {r.get('working_mb', float('nan')):.0f} | {r.get('bound', float('nan')):.3f} |")
    lines += ["", "## Training: one epoch, batch 100 (implementations taking turns in one process)", "",
              "Speeds are medians of the per-run ratios: against the plain loop with default Adam, and against the same loop with Adam's",
              "fused kernel (vaelab's optimiser), which leaves what vaelab adds beyond the optimiser.", "",
              "| algorithm | implementation | images/s | speed vs plain loop, default Adam | speed vs plain loop, fused Adam | seconds |",
              "|---|---|---|---|---|---|"]
    for r in results["training"]:
        lines.append(f"| {r['algorithm']} | {r['implementation']} | {r.get('images_per_second', float('nan')):.0f} | {r.get('vs_baseline', float('nan')):.2f}x | "
                     f"{r.get('vs_fused', float('nan')):.2f}x | {r.get('seconds', float('nan')):.2f} {r.get('error', '')} |")
    lines += ["", "## Scaling of vaelab's evaluator", "", "| k | images | threads | seconds | µs per sample |", "|---|---|---|---|---|"]
    for r in results["scaling"]:
        lines.append(f"| {r['k']} | {r['images']} | {r['threads']} | {r['seconds']:.2f} | {r['microseconds_per_sample']:.2f} |")
    if results.get("folding"):
        lines += ["", "## Active-unit folding: L_1000 on a trained 2-D MNIST model (one thread, in turns in one process)", "",
                  "| epochs | images | posterior sd (median) | crossing units (undecided by the box) | floor s | folding s | dense s | folding vs floor | dense vs floor | max difference (nats) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in results["folding"]:
            lines.append(f"| {r['epochs']} | {r['images']} | {r['posterior_sd']:.3f} | {r['crossing']:.0f} ({r.get('undecided', float('nan')):.0f}) of {r['hidden']} | {r['seconds']['floor']:.2f} | "
                         f"{r['seconds']['folding']:.2f} | {r['seconds']['dense']:.2f} | {r['folding_vs_floor']:.2f}x | {r['dense_vs_floor']:.2f}x | {r['max_difference']:.1e} |")
    if results.get("contention"):
        lines += ["", "## Contention: `vaelab compare` alone and beside two competing PyTorch processes", "",
                  "| variant | alone s | contended s | ratio |", "|---|---|---|---|"]
        for r in results["contention"]:
            lines.append(f"| {r['policy']} | {r['alone']:.1f} | {r['contended']:.1f} | {r['ratio']:.2f}x |")
    if results.get("seeds"):
        lines += ["", "## Seeds: four seeds one after the other, as parallel jobs, and together over stacked parameters", "",
                  "Training epochs only, medians over the repeats; time relative to the faster of the two one-after-the-other settings of the same",
                  "repeat, median of the repeats' ratios (issue 32's target at batch 20: <= 0.4x).", "",
                  "| configuration | variant | steps per seed | seconds | seed-steps/s | time vs best one after the other |", "|---|---|---|---|---|---|"]
        for r in results["seeds"]:
            lines.append(f"| {r['config']} (load {r['load_average']:.1f}) | {r['variant']} | {r['steps']} | {r['seconds']:.2f} | {r['seed_steps_per_second']:.0f} | {r['vs_best_sequential']:.2f}x |")
    for r in results.get("study", []):
        lines += ["", "## The homework's MNIST study end to end (`vaelab compare --dataset mnist --eval-train-size 10000`)", "",
                  f"{r['wall_seconds']:.0f} s in all, the algorithms {'at once' if r['at_once'] else 'one after the other'}; "
                  f"the rest (start-up, bound curves, figures, report) beyond the algorithms' runs {r['other_seconds']:.0f} s.", "",
                  "| algorithm | training s | in-training evaluation s | epoch | k | test L_k |", "|---|---|---|---|---|---|"]
        lines += [f"| {name} | {times['training_seconds']:.0f} | {times['evaluation_seconds']:.0f} | {r['final_test'][name]['epoch']} | {r['final_test'][name]['k']} | "
                  f"{r['final_test'][name]['bound']:.2f} ± {r['final_test'][name]['stderr']:.2f} |" for name, times in r["algorithms"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
