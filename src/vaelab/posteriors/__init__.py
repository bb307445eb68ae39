"""The registry of posterior families q_phi(z | x): one file and one entry per family.

An entry says what the rest of vaelab needs to know without building a model (command-line
choices and help, whether log q of a given z can be computed, which objectives it can train) and
names the class that computes it (an :class:`~vaelab.posteriors.flow.AmortizedFlow`, imported
only when a model is built, so that ``import vaelab.config`` and ``vaelab --help`` stay free of
PyTorch). Every family starts from the encoder's diagonal Gaussian q0(z_0 | x); a flow family
pushes its sample through T invertible steps whose parameters the encoder's last hidden layer
h(x) sets (amortized, Rezende & Mohamed 2015; Kingma et al. 2016).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vaelab.errors import ConfigError

if TYPE_CHECKING:  # annotation only: the classes import torch
    from vaelab.posteriors.flow import AmortizedFlow


@dataclass(frozen=True)
class PosteriorEntry:
    """One family of q(z | x).

    Attributes:
        name: the registry name (``--posterior NAME``).
        implementation: ``"module:Class"`` of its :class:`~vaelab.posteriors.flow.AmortizedFlow`;
            None for the encoder's diagonal Gaussian itself (no flow).
        summary: one line for ``vaelab train --help``.
        log_prob: log q(z | x) of a given z is available (an exact inverse); without it only
            z and log q(z | x) drawn together are, and objectives that score given z (rws,
            wake-sleep, vimco) refuse the family.
    """

    name: str
    implementation: str | None
    summary: str
    log_prob: bool

    def flow(self) -> type[AmortizedFlow]:
        """The class that computes it (imports its module)."""
        if self.implementation is None:
            raise ConfigError(f"the {self.name} posterior has no flow")
        module, _, name = self.implementation.partition(":")
        return getattr(importlib.import_module(module), name)


POSTERIORS: dict[str, PosteriorEntry] = {
    entry.name: entry
    for entry in (
        PosteriorEntry("diagonal", None, "the encoder's diagonal Gaussian N(mu(x), diag sigma(x)^2)", log_prob=True),
        PosteriorEntry(
            "iaf", "vaelab.posteriors.iaf:InverseAutoregressiveFlow",
            "inverse autoregressive flow: --flow-steps MADE steps conditioned on h(x) (Kingma et al. 2016)", log_prob=False,
        ),
        PosteriorEntry(
            "planar", "vaelab.posteriors.planar:PlanarFlow",
            "amortized planar flow: --flow-steps steps z + u tanh(w.z + b), u.w >= -1 (Rezende & Mohamed 2015)", log_prob=False,
        ),
        PosteriorEntry(
            "householder", "vaelab.posteriors.householder:HouseholderFlow",
            "--flow-steps Householder reflections of the Gaussian's sample, vectors from h(x) (Tomczak & Welling 2016)", log_prob=True,
        ),
    )
}

POSTERIOR_NAMES: tuple[str, ...] = tuple(POSTERIORS)


def get_posterior(name: str) -> PosteriorEntry:
    """The entry of ``name``; ConfigError (one line, listing the families) for an unknown one."""
    if name not in POSTERIORS:
        raise ConfigError(f"unknown posterior {name!r}; choose one of {', '.join(POSTERIOR_NAMES)}")
    return POSTERIORS[name]
