"""Figures of ``vaelab bounds``, drawn from the saved results (``bounds.json``), never recomputed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import torch  # noqa: E402

from vaelab.exact.counterexample import FIT_SMALLEST_K, light_tailed_gap  # noqa: E402
from vaelab.runio import write_figure_atomic  # noqa: E402

FIGURES = {"curves": "bound_vs_k", "counterexample": "counterexample"}
PROPOSAL_LABELS = {
    "matched": "matched q (1.5x the posterior's width): p/q bounded, converges",
    "light-tailed": "light-tailed q (0.2x its width): p/q unbounded, converges impractically slowly",
    "truncated": "truncated q (one quadrant): p/q infinite off its support, converges to a wrong limit",
}
PROPOSAL_STYLES = {
    "matched": {"color": "tab:green", "marker": "o", "linewidth": 4, "alpha": 0.6},  # wide: the truncated q's ESS lies on it
    "light-tailed": {"color": "tab:orange", "marker": "^"},
    "truncated": {"color": "tab:red", "marker": "s", "markerfacecolor": "none", "linestyle": "--"},
}
GAP_LINEAR_THRESHOLD = 1e-3  # nats: the gap axis is linear below this, logarithmic above


def curves_figure(results: dict[str, Any]) -> plt.Figure:
    """Top: L_k against k beside exact log p(x); bottom: the gap log p(x) - L_k; one column per model."""
    ks = results["settings"]["ks"]
    curves = results["curves"]
    figure, axes = plt.subplots(2, len(curves), figsize=(5 * len(curves), 7.5), sharex=True, squeeze=False)
    for column, curve in enumerate(curves):
        top, bottom = axes[0, column], axes[1, column]
        top.errorbar(ks, curve["bound"], yerr=curve["bound_stderr"], marker="o", markersize=4, capsize=3, label="$L_k$ (mean ± s.e.)")
        exact_label = f"exact log p(x) ({curve['method']})"
        if curve["exact_error"]:
            exact_label += f", error ≈ {curve['exact_error']:.0e}"
        top.axhline(curve["exact"], color="black", linestyle="--", label=exact_label)
        top.set_title(f"{curve['title']}\n{curve['num_points']} data points", fontsize=10)
        top.set_ylabel("nats (mean over data points)")
        top.legend(fontsize=8, loc="lower right")
        bottom.errorbar(ks, curve["gap"], yerr=curve["bound_stderr"], marker="o", markersize=4, capsize=3, color="tab:blue", label="log p(x) − $L_k$")
        bottom.axhline(0, color="black", linestyle="--", linewidth=1)
        if curve["exact_error"]:
            bottom.axhspan(-curve["exact_error"], curve["exact_error"], color="grey", alpha=0.3, label="± quadrature error estimate")
        bottom.set_yscale("symlog", linthresh=GAP_LINEAR_THRESHOLD)
        lowest = min(gap - stderr for gap, stderr in zip(curve["gap"], curve["bound_stderr"]))
        bottom.set_ylim(bottom=min(-GAP_LINEAR_THRESHOLD, 1.5 * lowest))
        bottom.set_ylabel(f"log p(x) − $L_k$ (nats; linear below {GAP_LINEAR_THRESHOLD:g})")
        bottom.set_xlabel("k (importance samples, log scale)")
        bottom.legend(fontsize=8, loc="upper right")
        top.set_xscale("log")
    figure.suptitle("E[$L_k$] rises with k towards log p(x) and never exceeds it (seed §1.4)", fontsize=12)
    figure.tight_layout()
    return figure


def counterexample_figure(results: dict[str, Any]) -> plt.Figure:
    """Left: L_k - log p(x) for each proposal, with the limits; right: the effective sample size."""
    ks = results["settings"]["ks"]
    study = results["counterexample"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(14, 6.5))
    for name, label in PROPOSAL_LABELS.items():
        proposal = study["proposals"][name]
        offsets = [-gap for gap in proposal["gap"]]
        left.errorbar(ks, offsets, yerr=proposal["gap_stderr"], markersize=5, capsize=3, label=label, **PROPOSAL_STYLES[name])
        right.plot(ks, proposal["ess"], markersize=5, label=label, **PROPOSAL_STYLES[name])
    left.axhline(0, color="black", linestyle="--", label="log p(x) (closed form)")
    truncated = study["proposals"]["truncated"]
    left.axhline(-truncated["limit_gap"], color="tab:red", linestyle=":",
                 label=f"truncated q's limit: log p(x) + log P(its quadrant | x) = log p(x) − {study['latent_dim']} log 2")
    light = study["proposals"]["light-tailed"]
    fitted_ks = [k for k in ks if k >= FIT_SMALLEST_K]
    fitted = -light_tailed_gap(torch.tensor(fitted_ks), light["fit_constant"])
    left.plot(fitted_ks, fitted.tolist(), color="tab:orange", linestyle=":",
              label=f"fit log(1 − C k$^{{-c^2}}$), C = {light['fit_constant']:.2f} (k ≥ {FIT_SMALLEST_K}): "
              f"−0.1 nats at k ≈ {light['samples_for_0.1_nats']:.0e}")
    left.set_xscale("log")
    left.set_xlabel("k (importance samples, log scale)")
    left.set_ylabel(f"$L_k$ − log p(x) (nats, mean over {study['num_points']} data points)")
    left.set_title("$L_k$ with three proposals for the same posterior", fontsize=10)
    left.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0, -0.13))  # below the axes: the curves fill them
    right.plot(ks, ks, color="grey", linestyle="--", label="ESS = k (equal weights)")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("k (importance samples, log scale)")
    right.set_ylabel("effective sample size $(\\sum w)^2 / \\sum w^2$ (log scale)")
    right.set_title(
        "Effective sample size of k weights (mean over blocks and data points);\n"
        "the truncated q's equals the matched q's: ESS cannot see missing support",
        fontsize=10,
    )
    right.legend(fontsize=8, loc="upper left")
    figure.suptitle("Counterexample (seed §1.5): with unbounded p/q, $L_k$ stalls below log p(x)", fontsize=12)
    figure.tight_layout()
    return figure


def write_figures(results: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Draw every figure as PNG and PDF into ``out_dir``; returns the PNG paths."""
    out_dir = Path(out_dir)
    paths = []
    for key, draw in (("curves", curves_figure), ("counterexample", counterexample_figure)):
        figure = draw(results)
        for suffix in ("png", "pdf"):
            write_figure_atomic(out_dir / f"{FIGURES[key]}.{suffix}", figure, dpi=150, bbox_inches="tight")
        plt.close(figure)
        paths.append(out_dir / f"{FIGURES[key]}.png")
    return paths
