"""The one-line summaries of evaluation rows that the command line prints, beside the code that
computes the rows (:mod:`vaelab.evaluation.evaluate`; ``--exact``'s are :func:`vaelab.evaluation.exact.summary_lines`)."""

from __future__ import annotations

from typing import Any

from vaelab.estimators.bounds import plus_minus

# Above this share of images with k-hat > 0.7, L_k is unreliable for the split as a whole: on 20 Frey
# faces, AIS gave 1228.3 nats where L_1000 gave 1218.5.
K_HAT_ADVICE_ABOVE = 0.5


def bits_words(row: dict[str, Any], key: str) -> str:
    """' (1.234 bits/dim)': the bits/dim of ``row[key]`` where the row has them
    (:func:`vaelab.evaluation.units.bits_per_dim_fields`: discrete data), else ''."""
    return "" if row.get(f"{key}_bpd") is None else f" ({row[f'{key}_bpd']:.3f} bits/dim)"


def bound_words(row: dict[str, Any]) -> str:
    """'test L_100 = -95.123 ± 0.456 nats (0.175 bits/dim)': the bound of an L_k row, in bits/dim too where
    the data are discrete (no '± nan' for one image: :func:`plus_minus`)."""
    return f"{row['split']} L_{row['k']} = {plus_minus(row['bound'], row['bound_stderr'])}{bits_words(row, 'bound')}"


def k_hat_words(row: dict[str, Any]) -> str:
    """'; Pareto k-hat > 0.7 on 3.0% of images (mean 0.41)', or '' where k < 25 gave no k-hat; where
    more than half the images are above 0.7, the advice to estimate log p(x) by AIS instead."""
    if row.get("k_hat_above") is None:
        return ""
    mean = "" if row.get("k_hat_mean") is None else f" (mean {row['k_hat_mean']:.2f})"
    advice = (
        ": L_k is unreliable on most images (q misses much of the posterior); estimate log p(x) with --estimator ais"
        if row["k_hat_above"] > K_HAT_ADVICE_ABOVE else ""
    )
    return f"; Pareto k-hat > 0.7 on {row['k_hat_above']:.1%} of images{mean}{advice}"


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
        f"{row['split']} AIS log p(x) = {plus_minus(row['log_px'], row['log_px_stderr'])}{bits_words(row, 'log_px')} "
        f"(T={row['steps']}, M={row['chains']}{acceptance}, {row['decoder_passes']} decoder passes per image; "
        f"{row['num_images']} images, epoch {row['epoch']}, {row['eval_seconds']:.1f} s)"
    )


def bdmc_line(row: dict[str, Any]) -> str:
    """What ``vaelab evaluate --bdmc`` prints per T (:func:`vaelab.evaluation.evaluate.evaluate_bdmc_run`): the
    sandwich's mean |width|, and the share of images where it is inverted with what that means."""
    return (
        f"BDMC T={row['steps']} M={row['chains']} on {row['num_images']} simulated images: "
        f"lower {plus_minus(row['lower'], row['lower_stderr'], unit='')}, upper {plus_minus(row['upper'], row['upper_stderr'])}{_sandwich_bits(row)}; "
        f"width |upper - lower| mean {row['width_abs_mean']:.3f} nats (signed mean {row['width_mean']:.3f}, max {row['width_max']:.3f}); "
        f"inverted (upper < lower) on {row['inverted']:.0%} of images" + inverted_words(row["inverted"]) + f" ({row['eval_seconds']:.1f} s)"
    )


def _sandwich_bits(row: dict[str, Any]) -> str:
    """' (lower 1.234, upper 1.230 bits/dim)' where a BDMC row has bits/dim, else ''."""
    if row.get("lower_bpd") is None:
        return ""
    return f" (lower {row['lower_bpd']:.3f}, upper {row['upper_bpd']:.3f} bits/dim)"


def inverted_words(inverted: float) -> str:
    """What an inverted BDMC sandwich means, where any image's is (:func:`vaelab.estimators.ais.sandwich_summary`)."""
    if not inverted:
        return ""
    return ": there the AIS noise exceeds the gap and neither estimate bounds log p(x); use more chains (--k) or steps (--steps)"
