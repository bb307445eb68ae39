"""Published protocols as data: one :class:`Preset` per paper's table, one :class:`Row` per line of it.

A preset states the paper, the table, each row's reference negative log-likelihood (nats, test
set) with its :class:`Source` (printed in the paper, or an independent reproduction's) and the
protocol that produced it (data, networks, optimiser and schedule, algorithm and k,
the evaluation's k). :func:`row_config` turns a row and a budget into the
:class:`~vaelab.config.ExperimentConfig` that ``vaelab train`` would run:

- ``full``: the published budget;
- ``reduced``: the same protocol cut to ``reduced_epochs`` (a stated fraction that fits a CPU day
  for the one-layer models; Burda et al.'s stages i = 0..5, 364 of 3,280 epochs);
- ``smoke``: seconds, for CI: 200 training images, one epoch, k <= 2, L_5 on 500 test images at the end.

The reference values are those quoted in vaelab's issue 16; each :class:`Source` says how it was
confirmed (``checked``; "unverified" where it was not). Where a source gives no
seed-to-seed spread the band is vaelab's choice and ``band_source`` says so. Each preset's ``notes``
state where vaelab's protocol differs from the paper's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from vaelab.config import DataConfig, ExperimentConfig, ModelConfig, TrainConfig
from vaelab.errors import ConfigError
from vaelab.schedules import burda_epochs

BUDGETS = ("smoke", "reduced", "full")
SMOKE_TRAIN_IMAGES = 200
SMOKE_MAX_SAMPLES = 2  # k (and groups) of the smoke budget's training
SMOKE_EVAL_K = 5
SMOKE_TEST_IMAGES = 500  # the smoke budget's final L_5 is on the first 500 test images
CURVE_K = 100  # k of the periodic test evaluations that draw the learning curve (L_100 <= L_5000)
CLAIM_WORDS = {"elbo": "ELBO", "bound": "L_k"}  # what a preset's claim_on compares, in words
NO_SPREAD = "the source gives no seed-to-seed spread; the band is vaelab's choice (1 nat)"


@dataclass(frozen=True)
class Source:
    """Where a reference number comes from: ``citation`` (paper and table or figure, or who reproduced
    it), whether the paper itself printed it (``printed``; False: an independent reproduction) and
    how the number was confirmed (``checked``; None: unverified)."""

    citation: str
    printed: bool
    checked: str | None = None

    @property
    def kind(self) -> str:
        """'published' only for a number the cited paper printed."""
        return "published" if self.printed else "independent reproduction"

    @property
    def words(self) -> str:
        """e.g. 'published: Davidson et al. 2018, MNIST results (unverified)'."""
        return f"{self.kind}: {self.citation} ({self.checked or 'unverified'})"


@dataclass(frozen=True)
class Row:
    """One line of a reference table: an algorithm with its k, the reference test NLL (nats; None
    where the paper states an ordering, not a number) and its ``source``."""

    name: str
    label: str
    algorithm: str
    num_samples: int
    published: float | None
    source: Source
    groups: int = 1
    ciwae_beta: float = 0.5


@dataclass(frozen=True)
class Preset:
    """A published table and its protocol.

    ``train`` holds the protocol's optimiser, schedule, batch and epochs (its algorithm and k are
    each row's); ``eval_k`` is the k of the published L_k; ``band`` the half-width (nats) within
    which a measured NLL counts as reproducing the published one; ``claim`` an ordering the paper
    states in place of numbers (row names, best first), decided on ``claim_on``: 'elbo' (the test
    -ELBO, as Kingma & Welling compare their bounds) or 'bound' (the test -L_``eval_k``).
    """

    name: str
    paper: str
    table: str
    rows: tuple[Row, ...]
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    eval_k: int
    band: float
    band_source: str
    reduced_epochs: int
    notes: str = ""
    claim: tuple[str, ...] = ()
    claim_on: str = "bound"

    def row(self, name: str) -> Row:
        for row in self.rows:
            if row.name == name:
                return row
        raise ConfigError(f"preset {self.name} has no row {name!r}; its rows are {', '.join(r.name for r in self.rows)}")


def row_config(preset: Preset, row: Row, budget: str) -> ExperimentConfig:
    """The config of ``row`` of ``preset`` under ``budget`` (one of :data:`BUDGETS`).

    Training evaluates test L_100 every ``eval_every`` epochs for the learning curve; the published
    L_``eval_k`` is measured once at the end (:func:`final_k`).
    """
    if budget not in BUDGETS:
        raise ConfigError(f"budget must be one of {', '.join(BUDGETS)} (got {budget!r})")
    train = dataclasses.replace(
        preset.train, algorithm=row.algorithm, num_samples=row.num_samples, groups=row.groups, ciwae_beta=row.ciwae_beta,
        eval_k=CURVE_K, eval_splits=("test",),
    )
    if budget == "reduced":
        train = dataclasses.replace(train, epochs=preset.reduced_epochs, eval_every=max(1, preset.reduced_epochs // 10))
    elif budget == "full":
        train = dataclasses.replace(train, eval_every=max(1, train.epochs // 40))
    else:
        train = dataclasses.replace(
            # its curve is L_2 on the 200 training images: evaluating all 10,000 test images would take most of the time
            train, epochs=1, eval_every=1, eval_k=2, train_size=SMOKE_TRAIN_IMAGES, batch_size=min(train.batch_size, 50),
            eval_splits=("train",), eval_train_size=SMOKE_TRAIN_IMAGES,
            num_samples=min(row.num_samples, SMOKE_MAX_SAMPLES), groups=min(row.groups, SMOKE_MAX_SAMPLES),
        )
        if row.algorithm in ("vimco", "rws-dreg"):  # need two samples at least
            train = dataclasses.replace(train, num_samples=2)
    return ExperimentConfig(data=preset.data, model=preset.model, train=train, seed=0)


def final_k(preset: Preset, budget: str) -> int:
    """k of the final test L_k: the published one, or 5 for the smoke budget."""
    return SMOKE_EVAL_K if budget == "smoke" else preset.eval_k


def final_images(budget: str) -> int | None:
    """Test images of the final L_k: all of them (None), or the first 500 for the smoke budget."""
    return SMOKE_TEST_IMAGES if budget == "smoke" else None


# Burda et al. 2015, section 5 and appendix: Adam (0.9, 0.999, 1e-4), batch 20, 3^i epochs at
# 1e-3 * 10^(-i/7) for i = 0..7, tanh networks, decoder bias at the data-mean logits, test L_5000.
_BURDA_TRAIN = TrainConfig(
    epochs=burda_epochs(7), batch_size=20, learning_rate=1e-3, lr_schedule="burda", adam_beta1=0.9, adam_beta2=0.999, adam_eps=1e-4
)
_BURDA_REDUCED = burda_epochs(5)  # stages i = 0..5: 364 of 3,280 epochs, the last lr 1e-3 * 10^(-5/7)
_DYNAMIC_MNIST = DataConfig(dataset="mnist", binarization="dynamic", binarization_seed=0)
_ONE_LAYER = ModelConfig(latent_dim=50, hidden=(200, 200), activation="tanh")
_TWO_LAYERS = ModelConfig(latent_dim=(100, 50), hidden=(200, 200), upper_hidden=(100, 100), activation="tanh")


# Where the reference numbers come from (issue 29). The papers' own tables could not be read when the
# sources were labelled: Burda et al.'s numbers match those that github.com/nbip/IWAE's README quotes
# from the paper, and the DReG numbers are that README's own; the others are unverified.
_BURDA = "Burda, Grosse & Salakhutdinov 2015, Importance weighted autoencoders"
_NBIP = "github.com/nbip/IWAE"
_QUOTED_BY_NBIP = f"matches the paper's values as quoted in {_NBIP}'s README"
_BURDA_TABLE_1 = Source("Burda et al. 2015, Table 1", printed=True, checked=_QUOTED_BY_NBIP)
_BURDA_APPENDIX = Source("Burda et al. 2015, appendix D (Larochelle's fixed binarization)", printed=True, checked=_QUOTED_BY_NBIP)
_DREG_REPRODUCTION = Source(
    f"by {_NBIP} (a TensorFlow 2 reproduction of Burda et al.'s one-layer model, trained with and without DReG)",
    printed=False, checked=f"read in {_NBIP}'s README, table 'DReG estimator, 1 stochastic layer'",
)
_RAINFORTH = Source("Rainforth et al. 2018, dynamic MNIST results (table number not recorded)", printed=True)
_TOMCZAK = Source("Tomczak & Welling 2018, MNIST results (table number not recorded)", printed=True)
_DAVIDSON = Source("Davidson et al. 2018, MNIST results (table number not recorded)", printed=True)
_DITTADI = "Dittadi's re-implementation (github.com/addtt/ladder-vae-pytorch)"
_DITTADI_README = Source(
    f"{_DITTADI}, README table 'Likelihood results', binarized MNIST, 12 layers, 1000 importance samples",
    printed=False, checked="read in the README at commit ee9caa4 on 2026-12-07",
)
_KINGMA_FIGURE_2 = Source("Kingma & Welling 2013, Figure 2 (an ordering of lower bounds, no number)", printed=True)
_CLOSED_FORM_KL = (
    "vaelab's VAE rows use the closed-form KL where one exists (--kl auto), where the paper estimates the whole "
    "ELBO by sampling: the same objective, a lower-variance gradient."
)


def _vae_and_iwae(vae: tuple[float, float, float], iwae: tuple[float, float]) -> tuple[Row, ...]:
    return (
        Row("vae-k1", "VAE k=1", "aevb", 1, vae[0], _BURDA_TABLE_1),
        Row("vae-k5", "VAE k=5", "aevb", 5, vae[1], _BURDA_TABLE_1),
        Row("vae-k50", "VAE k=50", "aevb", 50, vae[2], _BURDA_TABLE_1),
        Row("iwae-k5", "IWAE k=5", "iwae", 5, iwae[0], _BURDA_TABLE_1),
        Row("iwae-k50", "IWAE k=50", "iwae", 50, iwae[1], _BURDA_TABLE_1),
    )


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            name="burda2015-1layer",
            paper=_BURDA,
            table="Table 1, MNIST, 1 stochastic layer (784-200-200-50 tanh), test L_5000",
            rows=_vae_and_iwae((86.76, 86.47, 86.35), (85.54, 84.78)),
            data=_DYNAMIC_MNIST, model=_ONE_LAYER, train=_BURDA_TRAIN, eval_k=5000,
            band=1.0, band_source=NO_SPREAD, reduced_epochs=_BURDA_REDUCED,
            notes=f"VAE k>1 averages k reparameterized samples (aevb's m); test set binarized once with seed 0. {_CLOSED_FORM_KL}",
        ),
        Preset(
            name="burda2015-2layer",
            paper=_BURDA,
            table="Table 1, MNIST, 2 stochastic layers (784-200-200-100-100-50 tanh), test L_5000",
            rows=_vae_and_iwae((85.33, 85.01, 84.78), (83.89, 82.90)),
            data=_DYNAMIC_MNIST, model=_TWO_LAYERS, train=_BURDA_TRAIN, eval_k=5000,
            band=1.0, band_source=NO_SPREAD, reduced_epochs=_BURDA_REDUCED, notes=_CLOSED_FORM_KL,
        ),
        Preset(
            name="burda2015-larochelle",
            paper=_BURDA,
            table="Appendix D, Larochelle's fixed binarization of MNIST, IWAE 1 stochastic layer, test L_5000",
            rows=(
                Row("iwae-k1", "IWAE k=1", "iwae", 1, 88.71, _BURDA_APPENDIX),
                Row("iwae-k5", "IWAE k=5", "iwae", 5, 87.63, _BURDA_APPENDIX),
                Row("iwae-k50", "IWAE k=50", "iwae", 50, 87.10, _BURDA_APPENDIX),
            ),
            data=DataConfig(dataset="binarized-mnist", binarization="none"), model=_ONE_LAYER, train=_BURDA_TRAIN, eval_k=5000,
            band=1.0, band_source=NO_SPREAD, reduced_epochs=_BURDA_REDUCED,
            notes="vaelab trains on the 50,000 training images of the fixed binarization (the 10,000 validation images are not added).",
        ),
        Preset(
            name="tucker2018-dreg",
            paper="Tucker, Lawson, Gu & Maddison 2018, Doubly reparameterized gradient estimators for Monte Carlo objectives",
            table="IWAE-DReG against IWAE, k=50, 1 stochastic layer, dynamic MNIST, test L_5000 (numbers of an independent reproduction, github.com/nbip/IWAE)",
            rows=(
                Row("iwae-dreg-k50", "IWAE-DReG k=50", "iwae-dreg", 50, 84.32, _DREG_REPRODUCTION),
                Row("iwae-k50", "IWAE k=50", "iwae", 50, 84.59, _DREG_REPRODUCTION),
            ),
            data=_DYNAMIC_MNIST, model=_ONE_LAYER, train=_BURDA_TRAIN, eval_k=5000,
            band=1.0, band_source=NO_SPREAD, reduced_epochs=_BURDA_REDUCED,
            notes=(
                "Burda et al.'s model and schedule. Both numbers are an independent reproduction's (github.com/nbip/IWAE), "
                "not Tucker et al.'s; its IWAE k=50 (84.59, its own training) differs from Burda et al.'s Table 1 "
                "(84.78, preset burda2015-1layer) for the same configuration: compare a measurement with the reference "
                "of its own source."
            ),
        ),
        Preset(
            name="rainforth2018",
            paper="Rainforth, Kosiorek, Le, Maddison, Igl, Wood & Teh 2018, Tighter variational bounds are not necessarily better",
            table="Dynamic MNIST, K=64 samples per datapoint, test L_5000",
            rows=(
                Row("iwae-k64", "IWAE K=64", "iwae", 64, 84.52, _RAINFORTH),
                Row("piwae-8x8", "PIWAE (8,8)", "piwae", 8, 84.46, _RAINFORTH, groups=8),
                Row("miwae-8x8", "MIWAE (8,8)", "miwae", 8, 84.97, _RAINFORTH, groups=8),
                Row("ciwae-b0.5", "CIWAE beta=0.5", "ciwae", 64, 85.24, _RAINFORTH, ciwae_beta=0.5),
                Row("vae-k64", "VAE (64 samples)", "aevb", 64, 86.21, _RAINFORTH),
            ),
            data=_DYNAMIC_MNIST, model=_ONE_LAYER, train=_BURDA_TRAIN, eval_k=5000,
            band=1.0, band_source=NO_SPREAD, reduced_epochs=_BURDA_REDUCED,
            notes=f"Burda et al.'s one-layer model and schedule assumed; vaelab's miwae/piwae take M groups of k samples. {_CLOSED_FORM_KL}",
        ),
        Preset(
            name="tomczak2018-vamp",
            paper="Tomczak & Welling 2018, VAE with a VampPrior",
            table="Dynamic MNIST, one stochastic layer, VampPrior with 500 pseudo-inputs, test L_5000",
            rows=(Row("vamp-500", "VAE + VampPrior (500)", "aevb", 1, 85.57, _TOMCZAK),),
            data=_DYNAMIC_MNIST,
            model=ModelConfig(latent_dim=40, hidden=(300, 300), activation="tanh", prior="vamp", prior_components=500),
            train=TrainConfig(epochs=2000, batch_size=100, learning_rate=5e-4),
            eval_k=5000, band=1.0, band_source=NO_SPREAD, reduced_epochs=200,
            notes=(
                "The paper's gated (GatedDense) layers, KL warm-up and early stopping are not in vaelab: plain tanh MLPs, "
                "fixed 2,000 epochs. vaelab's pseudo-inputs are free parameters, not clamped to the pixel range [0, 1]; "
                "the KL is estimated by sampling (the VampPrior has no closed form)."
            ),
        ),
        Preset(
            name="davidson2018-2d",
            paper="Davidson, Falorsi, De Cao, Kipf & Tomczak 2018, Hyperspherical variational auto-encoders",
            table="Binarized MNIST, Gaussian VAE (N-VAE) with a 2-D latent, test log-likelihood from 500 importance samples",
            rows=(Row("n-vae-d2", "N-VAE d=2", "aevb", 1, 135.73, _DAVIDSON),),
            data=_DYNAMIC_MNIST,
            model=ModelConfig(latent_dim=2, hidden=(256, 128), activation="relu"),
            train=TrainConfig(epochs=1000, batch_size=64, learning_rate=1e-3),
            eval_k=500, band=1.0, band_source=NO_SPREAD, reduced_epochs=30,
            notes=(
                "Encoder x-256-128-z as published; vaelab's decoder is z-256-128-x (not mirrored). No early stopping: fixed "
                "epochs. The KL is in closed form (--kl auto)."
            ),
        ),
        Preset(
            name="kingma2013",
            paper="Kingma & Welling 2013, Auto-encoding variational Bayes",
            table="Figure 2, MNIST: AEVB's lower bound (ELBO) above wake-sleep's in every experiment (an ordering, no table)",
            rows=(
                Row("aevb", "AEVB", "aevb", 1, None, _KINGMA_FIGURE_2),
                Row("wake-sleep", "Wake-sleep", "wake-sleep", 1, None, _KINGMA_FIGURE_2),
            ),
            data=_DYNAMIC_MNIST,
            model=ModelConfig(latent_dim=20, hidden=(500,), activation="tanh"),
            train=TrainConfig(epochs=1000, batch_size=100, learning_rate=1e-3),
            eval_k=5000, band=0.0, band_source="an ordering: the claim holds when AEVB's test -ELBO is below wake-sleep's",
            reduced_epochs=100, claim=("aevb", "wake-sleep"), claim_on="elbo",
            notes=(
                "The paper compares the variational lower bound, so the ordering is decided on the test ELBO (L_1); "
                "L_5000 is shown beside it. The paper used Adagrad with a weight-decay prior; vaelab trains both with Adam. "
                "AEVB's KL is in closed form (--kl auto)."
            ),
        ),
        Preset(
            name="sonderby2016-ladder",
            paper=f"Sonderby, Raiko, Maaloe, Sonderby & Winther 2016, Ladder variational autoencoders, with convolutional latents as in {_DITTADI}",
            table="statically binarized MNIST, 12 stochastic layers of 32 latent channels, test L_1000 (3 layers 79.24, 6 layers 78.52)",
            rows=(Row("ladder-12", "conv ladder, 12 layers", "aevb", 1, 78.30, _DITTADI_README),),
            data=DataConfig(dataset="binarized-mnist", binarization="none"),
            model=ModelConfig(latent_dim=(32,) * 12, architecture="conv-ladder", ladder_merge="residual"),
            # the source trains until stopped and states no length: 1,000 epochs of batch 64 (780k steps)
            train=TrainConfig(epochs=1000, batch_size=64, learning_rate=3e-4, free_bits=1.0),
            eval_k=1000, band=1.0, band_source=NO_SPREAD, reduced_epochs=50,
            notes=(
                "vaelab's conv ladder, not the source's network: one residual block per layer (the source: 4, gated, with batch norm "
                "and dropout 0.2), latents at 14x14, 7x7 and 4x4 (the source: 14, 7, 4 and 2), Swish (the source: ELU), a fixed "
                "N(0, I) top prior (the source learns it), Adam (the source: Adamax) at the same 3e-4 and batch 64; both use NVAE's "
                "residual merge, skip connections in the top-down path and free bits of 1 nat per layer. vaelab trains on the "
                "50,000 training images of the fixed binarization."
            ),
        ),
    )
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)} ('vaelab reproduce --list')")
    return PRESETS[name]


def list_lines() -> list[str]:
    """One line per preset: name, paper, table, reference values and where each comes from."""
    lines = []
    for preset in PRESETS.values():
        values = ", ".join(f"{row.label} {row.published:.2f}" if row.published is not None else row.label for row in preset.rows)
        if preset.claim:
            values = " > ".join(preset.row(name).label for name in preset.claim) + f" (ordering of the {CLAIM_WORDS[preset.claim_on]})"
        sources = "; ".join(dict.fromkeys(row.source.words for row in preset.rows))  # each source once, in order
        lines.append(f"{preset.name:22} {preset.paper} | {preset.table} | reference NLL: {values} | {sources}")
    return lines

