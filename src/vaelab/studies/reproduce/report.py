"""The report of a reproduction, from its saved results alone (it never trains).

For each row of the preset: the reference NLL and its source ("published" only for a number the
paper printed; else whose reproduction it is), the measured one (-L_k on the test set, with its
standard error) and the test -ELBO, the measured NLL in bits/dim where the evaluation has it (binary or
binarized images: :mod:`vaelab.evaluation.units`), the gap in nats (measured - reference: positive is worse), whether
the measurement lies in the preset's band, the epochs trained out of the published budget and the
wall time; for partial budgets, the learning curve so far (test -L_100 at each evaluation, an upper
bound on -L_5000) against the published endpoint. A preset's ordering claim is decided on what the
paper compared (its ``claim_on``: the -ELBO or -L_k). Written as ``report.md`` and ``report.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaelab.errors import RunError
from vaelab.evaluation.across_seeds import across_seeds, load_seeds, seed_run_dir
from vaelab.runio import (
    FINAL_FILE,
    METRICS_FILE,
    REPORT_JSON,
    REPORT_MD,
    REPRODUCE_FILE,
    read_metrics,
    write_json_atomic,
    write_text_atomic,
)
from vaelab.studies.reproduce.presets import CLAIM_WORDS, Preset, get_preset, row_config


@dataclass
class ReproductionReport:
    preset: Preset
    budget: str
    rows: list[dict[str, Any]]
    markdown: Path
    claim_holds: bool | None

    @property
    def lines(self) -> list[str]:
        """One line per row that has a measurement, for the terminal."""
        lines = []
        for row in self.rows:
            if row["measured"] is None:
                continue
            published = f"no {row['source_kind']} number" if row["published"] is None else f"{row['source_kind']} {row['published']:.2f}"
            verdict = "" if row["gap"] is None else f", gap {row['gap']:+.2f} nats, {'in' if row['in_band'] else 'outside'} the ±{self.preset.band:g} band"
            lines.append(
                f"{self.preset.name} {row['name']}: measured {row['measured']:.2f} ± {row['stderr']:.2f}{_bits_words(row)} (L_{row['k']}; -ELBO {row['elbo']:.2f}, "
                f"epoch {row['epoch']}/{row['full_epochs']}, {self.budget}), {published}{verdict}; {row['wall_seconds']:.0f} s"
            )
        if self.claim_holds is not None:
            lines.append(
                f"{self.preset.name}: the published ordering {' < '.join(self.preset.claim)} (test -{CLAIM_WORDS[self.preset.claim_on]}) "
                f"{'holds' if self.claim_holds else 'does NOT hold'}"
            )
        return lines


def build_report(out: str | Path) -> ReproductionReport:
    """Read ``out`` (written by :func:`vaelab.studies.reproduce.run.reproduce`) and write its report."""
    out = Path(out)
    path = out / REPRODUCE_FILE
    if not path.is_file():
        raise RunError(f"{out}: not a reproduction (no {REPRODUCE_FILE}); 'vaelab reproduce NAME --out DIR' makes one")
    saved = json.loads(path.read_text())
    preset, budget = get_preset(saved["preset"]), saved["budget"]
    seeds = load_seeds(out)
    rows = [_row_result(preset, row, budget, out / row.name) if seeds is None else _row_over_seeds(preset, row, budget, out / row.name, seeds)
            for row in preset.rows]
    # the claim compares what the paper compared: -ELBO (Kingma & Welling's lower bounds) or -L_k
    measured = {row["name"]: row["elbo" if preset.claim_on == "elbo" else "measured"] for row in rows}
    claim_holds = None
    if preset.claim and all(measured[name] is not None for name in preset.claim):
        claim_holds = all(measured[a] < measured[b] for a, b in zip(preset.claim, preset.claim[1:]))
    write_json_atomic(out / REPORT_JSON, {"preset": preset.name, "budget": budget, "band": preset.band, "rows": rows, "claim_holds": claim_holds})
    write_text_atomic(out / REPORT_MD, _markdown(preset, budget, rows, claim_holds) + _seeds_markdown(rows, seeds))
    return ReproductionReport(preset, budget, rows, out / REPORT_MD, claim_holds)


def _row_result(preset: Preset, row, budget: str, run_dir: Path) -> dict[str, Any]:
    result: dict[str, Any] = {
        "name": row.name, "label": row.label, "published": row.published, "source": row.source.words, "source_kind": row.source.kind,
        "full_epochs": preset.train.epochs, "elbo": None, "elbo_stderr": None,
        "budget_epochs": row_config(preset, row, budget).train.epochs,
        "measured": None, "stderr": None, "measured_bpd": None, "k": None, "test_images": None, "epoch": None, "gap": None, "in_band": None, "wall_seconds": None, "curve": [], "curve_k": None, "curve_split": None,
    }
    metrics = read_metrics(run_dir / METRICS_FILE) if (run_dir / METRICS_FILE).exists() else []
    evaluations = [m for m in metrics if m["kind"] == "eval"]  # test L_100; the smoke budget's: train L_2
    result["curve"] = [[m["epoch"], -m["bound"]] for m in evaluations]
    result["curve_k"] = evaluations[-1]["k"] if evaluations else None
    result["curve_split"] = evaluations[-1]["split"] if evaluations else None
    train_rows = [m for m in metrics if m["kind"] == "train"]
    final_path = run_dir / FINAL_FILE
    if not final_path.exists():
        return result
    final = json.loads(final_path.read_text())
    result.update(measured=-final["bound"], stderr=final["bound_stderr"], k=final["k"], epoch=final["epoch"], test_images=final["num_images"],
                  elbo=-final["elbo"], elbo_stderr=final["elbo_stderr"], measured_bpd=final.get("bound_bpd"))  # absent before bits/dim
    result["wall_seconds"] = (train_rows[-1]["wall_seconds"] if train_rows else 0.0) + final["eval_seconds"]
    if row.published is not None:
        result["gap"] = result["measured"] - row.published
        result["in_band"] = abs(result["gap"]) <= preset.band
    return result


def _row_over_seeds(preset: Preset, row, budget: str, row_dir: Path, seeds: tuple[int, ...]) -> dict[str, Any]:
    """A row over the seeds' runs ``row_dir/seed-<s>``: measured NLL and -ELBO as the mean over the seeds
    measured so far, ``stderr`` their sd (with one seed, its standard error over images), gap and band of the mean; the per-seed
    values and the t-based 95% interval under ``seeds``."""
    per_seed = {seed: _row_result(preset, row, budget, seed_run_dir(row_dir, seed)) for seed in seeds}
    measured = {seed: result for seed, result in per_seed.items() if result["measured"] is not None}
    if not measured:
        return per_seed[seeds[0]]
    nll, elbo = across_seeds({s: r["measured"] for s, r in measured.items()}), across_seeds({s: r["elbo"] for s, r in measured.items()})
    first = next(iter(measured.values()))
    result = {**first, "measured": nll.mean, "elbo": elbo.mean, "wall_seconds": max(r["wall_seconds"] for r in measured.values()), "seeds": nll.to_dict()}
    bits = [r["measured_bpd"] for r in measured.values()]
    result["measured_bpd"] = None if None in bits else sum(bits) / len(bits)
    if nll.sd is not None:  # one seed: its standard error over images stays, as the note says
        result.update(stderr=nll.sd, elbo_stderr=elbo.sd)
    if row.published is not None:
        result["gap"] = nll.mean - row.published
        result["in_band"] = abs(result["gap"]) <= preset.band
    return result


def _seeds_markdown(rows: list[dict[str, Any]], seeds: tuple[int, ...] | None) -> str:
    """With seeds, what the measured columns mean, and each row's per-seed values and 95% interval."""
    if seeds is None:
        return ""
    lines = ["", f"## Over seeds {', '.join(map(str, seeds))}", "",
             "Measured NLL and -ELBO: mean ± sd (ddof = 1) over the seeds measured, one training run each; "
             "wall time: the longest seed's (with one seed measured, ± is its standard error over images). "
             "Each run's standard error over images is in its final.json.", ""]
    for row in rows:
        if "seeds" in row:
            summary = row["seeds"]
            interval = "none (1 seed)" if summary["interval"] is None else f"[{summary['interval'][0]:.2f}, {summary['interval'][1]:.2f}]"
            values = ", ".join(f"{seed}: {value:.2f}" for seed, value in zip(summary["seeds"], summary["values"]))
            lines.append(f"- {row['label']}: NLL per seed {values}; 95% interval {interval}")
    return "\n".join(lines) + "\n"


def _markdown(preset: Preset, budget: str, rows: list[dict[str, Any]], claim_holds: bool | None) -> str:
    lines = [
        f"# Reproduction of {preset.name} ({budget} budget)",
        "",
        f"{preset.paper}. {preset.table}.",
        "",
        f"Band: ±{preset.band:g} nats ({preset.band_source}). {preset.notes}".rstrip(),
        "",
        "Reference NLL: \"published\" only where the paper itself printed the number; \"unverified\": not checked against the cited table.",
        "",
        "| row | reference NLL | source | measured NLL | measured -ELBO | measured bits/dim | k | epochs (of published) | gap (nats) | in band | wall time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row["measured"] is None:
            lines.append(f"| {row['label']} | {_number(row['published'])} | {row['source']} | not run | | | | | | | |")
            continue
        lines.append(
            f"| {row['label']} | {_number(row['published'])} | {row['source']} | {row['measured']:.2f} ± {row['stderr']:.2f} | "
            f"{row['elbo']:.2f} ± {row['elbo_stderr']:.2f} | {_number(row.get('measured_bpd'), '.4f')} | {row['k']} ({row['test_images']} images) | "
            f"{row['epoch']} ({row['full_epochs']}) | {_number(row['gap'], '+.2f')} | "
            f"{'-' if row['in_band'] is None else 'yes' if row['in_band'] else 'no'} | {row['wall_seconds']:.0f} |"
        )
    if claim_holds is not None:
        lines += [
            "",
            f"Published ordering (test -{CLAIM_WORDS[preset.claim_on]}, best first: {', '.join(preset.claim)}): "
            f"{'holds' if claim_holds else 'does not hold'}.",
        ]
    partial = [row for row in rows if row["curve"] and row["epoch"] is not None and row["epoch"] < row["full_epochs"]]
    if partial:
        lines += ["", "## Learning curves so far against the published endpoint", ""]
        lines += ["-L_k at each evaluation (epoch: nats); with k below the published one, an upper bound on its -L_k.", ""]
        for row in partial:
            curve = ", ".join(f"{epoch}: {nll:.2f}" for epoch, nll in row["curve"])
            lines.append(f"- {row['label']}, {row['curve_split']} -L_{row['curve_k']} ({row['source_kind']} {_number(row['published'])} at epoch {row['full_epochs']}): {curve}")
    return "\n".join(lines) + "\n"


def _bits_words(row: dict[str, Any]) -> str:
    """' (0.1234 bits/dim)' of a row's measured NLL, or '' where its evaluation has no bits/dim."""
    return "" if row.get("measured_bpd") is None else f" ({row['measured_bpd']:.4f} bits/dim)"


def _number(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)
