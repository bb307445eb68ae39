"""``vaelab reproduce``: train each row of a preset under a budget, measure the published L_k, report.

One run directory per row (``OUT/<row>/``; with ``seeds``, one per row and seed, ``OUT/<row>/seed-<s>/``,
recorded in ``OUT/seeds.json``), trained through :func:`vaelab.training.train` with
``resume=True``, so a killed reproduction continues when run again and a finished row is not
retrained; on a CPU, rows can train at once, one process each (``jobs``; :mod:`vaelab.jobs`). After training, the published test L_k (e.g. L_5000) is measured once and saved as
``OUT/<row>/final.json``; it is skipped when already saved for the same checkpoint epoch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from vaelab.errors import RunError
from vaelab.evaluation.across_seeds import load_seeds, save_seeds, seed_run_dir
from vaelab.evaluation.evaluate import evaluate_split
from vaelab.jobs import processes_and_threads, run_jobs
from vaelab.runio import FINAL_FILE, REPRODUCE_FILE, directory_lock, make_directory, refuse_foreign_contents, write_json_atomic
from vaelab.studies.reproduce.presets import Preset, final_images, final_k, row_config
from vaelab.studies.reproduce.report import ReproductionReport, build_report
from vaelab.seeds import with_seed
from vaelab.training import train


def reproduce(
    preset: Preset,
    budget: str,
    out: str | Path,
    *,
    rows: Sequence[str] | None = None,
    data_dir: str | Path | None = None,
    progress: bool = True,
    device: str = "auto",
    jobs: int | None = 1,
    threads: int | None = None,
    seeds: Sequence[int] | None = None,
) -> ReproductionReport:
    """Train (or continue) ``rows`` of ``preset`` (default: all) under ``budget`` in ``out``,
    measure each row's final test L_k and write the report.

    ``jobs``: rows trained at once on a CPU, each in its own process with ``threads`` threads
    (:mod:`vaelab.jobs`; None: one process per row up to the usable CPUs); 1 trains them one
    after the other in this process. ``seeds``: every row trained once per seed (its config's
    ``seed`` replaced), all of them jobs; the report gives each row's mean ± sd over seeds.

    ``out`` is locked while the reproduction runs (:func:`vaelab.runio.directory_lock`), as each
    row's directory is while it trains.

    Raises:
        ConfigError: ``jobs`` above 1 on a GPU or under torchrun.
        RunError: ``out`` holds another preset's or budget's reproduction or files that are not a
            reproduction, cannot be written, or is in use by another process
            (:class:`vaelab.runio.DirectoryLockedError`).
    """
    out = Path(out)
    selected = [preset.row(name) for name in rows] if rows else list(preset.rows)
    arguments = [(preset, row.name, budget, out, data_dir, progress, device, seed) for row in selected for seed in (seeds or (None,))]
    processes, threads = processes_and_threads(len(arguments), jobs, threads, device)
    _check_reproduction_directory(out, preset.name, budget, seeds)  # before creating anything
    make_directory(out, "reproduction directory")
    with directory_lock(out, "reproduce"):  # a second `vaelab reproduce` there is refused in one line
        _check_reproduction_directory(out, preset.name, budget, seeds)  # again, now that no one else writes
        write_json_atomic(out / REPRODUCE_FILE, {"preset": preset.name, "budget": budget})
        if seeds is not None:
            save_seeds(out, seeds)
        layout = f"{out}/<row>" + ("" if seeds is None else "/seed-<s>")
        if processes > 1:
            tqdm.write(f"{preset.name}: {len(arguments)} runs, {processes} at once, one process of {threads} thread(s) each: {layout}")
            run_jobs(train_row, arguments, processes, threads)
        else:
            for number, row_arguments in enumerate(arguments, start=1):
                tqdm.write(f"{preset.name} {row_arguments[1]} ({number}/{len(arguments)}): {_run_dir(out, row_arguments[1], row_arguments[-1])}")
                train_row(*row_arguments)
        return build_report(out)


def _run_dir(out: Path, row: str, seed: int | None) -> Path:
    """``out/<row>``, or ``out/<row>/seed-<s>`` for ``seed``."""
    return out / row if seed is None else seed_run_dir(out / row, seed)


def train_row(
    preset: Preset, row: str, budget: str, out: Path, data_dir: str | Path | None, progress: bool, device: str, seed: int | None = None
) -> None:
    """Train (or continue) ``row`` of ``preset`` in ``out/<row>`` (``seed``'s: ``out/<row>/seed-<s>`` with the
    config's seed replaced) and save its final test L_k."""
    config = row_config(preset, preset.row(row), budget)
    config = config if seed is None else with_seed(config, seed)
    result = train(config, _run_dir(out, row, seed), data_dir=data_dir, resume=True, progress=progress, device=device)
    epoch = max(r["epoch"] for r in result.metrics if r["kind"] == "train")
    _save_final(result, config, final_k(preset, budget), final_images(budget), epoch)


def _check_reproduction_directory(out: Path, preset: str, budget: str, seeds: Sequence[int] | None = None) -> None:
    """Refuse ``out`` unless it is absent, empty, or holds the reproduction of ``preset`` at
    ``budget`` with the same ``seeds`` (which is continued): vaelab writes into no one else's folder."""
    if not out.exists():
        return
    if not out.is_dir():
        raise RunError(f"{out}: exists and is not a directory; choose another --out")
    path = out / REPRODUCE_FILE
    if not path.exists():
        refuse_foreign_contents(out, "reproduction")
        return
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise RunError(f"{path}: unreadable ({getattr(error, 'strerror', None) or type(error).__name__}); choose another --out") from None
    if not isinstance(saved, dict):
        raise RunError(f"{path}: not a vaelab reproduction file (a JSON {type(saved).__name__}); choose another --out")
    if (saved.get("preset"), saved.get("budget")) != (preset, budget):
        raise RunError(
            f"{out}: holds the reproduction of {saved.get('preset')} at budget {saved.get('budget')}; choose another --out"
        )
    recorded = load_seeds(out)
    if recorded != (None if seeds is None else tuple(seeds)):
        words = "no seeds" if recorded is None else f"seeds {', '.join(map(str, recorded))}"
        raise RunError(f"{out}: holds a reproduction with {words}; give the same --seeds, or choose another --out")


def _save_final(result, config, k: int, num_images: int | None, epoch: int) -> None:
    """Test L_k of the trained model at ``epoch`` (on the first ``num_images`` test images, None:
    all), saved as final.json, with its per-image bounds beside it, unless saved for that epoch."""
    path = result.run_dir / FINAL_FILE
    if path.exists() and json.loads(path.read_text()).get("epoch") == epoch:
        return
    row = evaluate_split(result.model, config, result.dataset, "test", k, epoch, num_images=num_images, bounds_dir=result.run_dir)  # one process
    write_json_atomic(path, {**row, "epoch": epoch})
