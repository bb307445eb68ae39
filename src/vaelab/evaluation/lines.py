"""The one-line summaries of evaluation rows that the command line prints, beside the code that
computes the rows (:mod:`vaelab.evaluation.evaluate`; ``--exact``'s are :func:`vaelab.evaluation.exact.summary_lines`)."""

from __future__ import annotations

from typing import Any


def bound_words(row: dict[str, Any]) -> str:
    """'test L_100 = -95.123 ± 0.456 nats': the bound of an L_k row."""
    return f"{row['split']} L_{row['k']} = {row['bound']:.3f} ± {row['bound_stderr']:.3f} nats"


def k_hat_words(row: dict[str, Any]) -> str:
    """'; Pareto k-hat > 0.7 on 3.0% of images (mean 0.41)', or '' where k < 25 gave no k-hat."""
    if row.get("k_hat_above") is None:
        return ""
    mean = "" if row.get("k_hat_mean") is None else f" (mean {row['k_hat_mean']:.2f})"
    return f"; Pareto k-hat > 0.7 on {row['k_hat_above']:.1%} of images{mean}"


def bound_line(row: dict[str, Any]) -> str:
    """What ``vaelab evaluate`` prints for an L_k row (:func:`vaelab.evaluation.evaluate.evaluate_run`)."""
    return (
        f"{bound_words(row)} (ELBO {row['elbo']:.3f}; {row['num_images']} images, epoch {row['epoch']}, {row['eval_seconds']:.1f} s)"
        + k_hat_words(row)
    )


def ais_line(row: dict[str, Any]) -> str:
    """What ``vaelab evaluate --estimator ais`` prints (:func:`vaelab.evaluation.evaluate.evaluate_ais_run`)."""
    acceptance = "" if row["acceptance"] is None else f", acceptance {row['acceptance']:.2f}"
    return (
        f"{row['split']} AIS log p(x) = {row['log_px']:.3f} ± {row['log_px_stderr']:.3f} nats "
        f"(T={row['steps']}, M={row['chains']}{acceptance}, {row['decoder_passes']} decoder passes per image; "
        f"{row['num_images']} images, epoch {row['epoch']}, {row['eval_seconds']:.1f} s)"
    )


def bdmc_line(row: dict[str, Any]) -> str:
    """What ``vaelab evaluate --bdmc`` prints per T (:func:`vaelab.evaluation.evaluate.evaluate_bdmc_run`)."""
    return (
        f"BDMC T={row['steps']} M={row['chains']} on {row['num_images']} simulated images: "
        f"lower {row['lower']:.3f} ± {row['lower_stderr']:.3f}, upper {row['upper']:.3f} ± {row['upper_stderr']:.3f} nats; "
        f"width mean {row['width_mean']:.3f}, max {row['width_max']:.3f} nats ({row['eval_seconds']:.1f} s)"
    )
