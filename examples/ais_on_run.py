"""log p(x) of a trained run by annealed importance sampling (AIS), beside L_k on the same images.

Trains a small AEVB run on the embedded digits first unless --run names one of yours (Gaussian
latents: AIS moves z by HMC). AIS with T intermediate distributions and M chains per image is a
stochastic lower bound on log p(x) that tightens with T; L_M is its T = 0 case. The same numbers,
written into the run: `vaelab evaluate RUN --estimator ais --steps 100 --k 16`.
Expected output, last line (20 epochs; on this small model L_16 is already within a few
hundredths of a nat of AIS, which is noisy at that scale; with --smoke, about -27 nats each):

    first 50 test images: L_16 = -24.21, AIS (T=100, M=16) = -24.25 nats

Usage: python examples/ais_on_run.py [--smoke] [--run DIR]   (--smoke: 1 epoch, T = 10, 20 images)
"""

import argparse

import torch

from vaelab import ExperimentConfig, TrainConfig, evaluate_bound, load_run, train
from vaelab.estimators.ais import AISSettings, evaluate_ais
from vaelab.evaluation.protocol import evaluation_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="1 epoch, T = 10, 20 images: seconds")
    parser.add_argument("--run", help="a run directory with Gaussian latents (default: train one in runs/ais)")
    args = parser.parse_args()

    run_dir = args.run
    if run_dir is None:
        run_dir = "runs/ais"
        epochs = 1 if args.smoke else 20
        train(ExperimentConfig(train=TrainConfig(epochs=epochs, eval_every=epochs, eval_k=100)), run_dir, overwrite=True, progress=False)
    steps, count = (10, 20) if args.smoke else (100, 50)

    run = load_run(run_dir)
    images, _ = evaluation_images(run.config, run.dataset, "test")  # binarized once, as every evaluation
    x = images[:count]
    settings = AISSettings(steps=steps, chains=16)
    ais = evaluate_ais(run.model, x, settings, generator=torch.Generator().manual_seed(0))
    bound = evaluate_bound(run.model, x, k=settings.chains, generator=torch.Generator().manual_seed(0))
    print(
        f"first {count} test images: L_{settings.chains} = {bound.mean():.2f}, "
        f"AIS (T={steps}, M={settings.chains}) = {ais.log_marginal.mean():.2f} nats"
    )


if __name__ == "__main__":
    main()
