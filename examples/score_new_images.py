"""Load a trained run and score new images: L_k of each, in nats, through the Python API.

Trains a small AEVB run on the embedded digits first unless --run names one of yours. Then
`load_run` reads it back (config, model at its last checkpoint, dataset) and `evaluate_bound`
gives L_1000 of every new image; `LoadedRun.log_likelihood_bound` is the same in one call.
Expected output, last line (20 epochs; with --smoke, L_100 of about -27 nats each):

    L_1000 of 4 new images: -21.1 -24.4 -26.0 -25.9 nats

Usage: python examples/score_new_images.py [--smoke] [--run DIR]   (--smoke: 1 epoch, k = 100)
"""

import argparse

import torch

from vaelab import ExperimentConfig, TrainConfig, evaluate_bound, load_run, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="1 epoch and k = 100: seconds")
    parser.add_argument("--run", help="a run directory to score with (default: train one in runs/score)")
    args = parser.parse_args()

    run_dir = args.run
    if run_dir is None:
        run_dir = "runs/score"
        epochs = 1 if args.smoke else 20
        train(ExperimentConfig(train=TrainConfig(epochs=epochs, eval_every=epochs, eval_k=100)), run_dir, overwrite=True, progress=False)
    k = 100 if args.smoke else 1000

    run = load_run(run_dir)
    # "New" images: four test images, binarized once, as a Bernoulli likelihood needs binary x.
    grey = run.dataset.unit_images("test")[:4]  # [0, 1] values (the splits hold uint8 levels)
    x = grey.bernoulli(generator=torch.Generator().manual_seed(1))
    bounds = evaluate_bound(run.model, x, k=k, generator=torch.Generator().manual_seed(0))  # [4] nats
    assert torch.allclose(bounds, run.log_likelihood_bound(x, k=k, seed=0))
    print(f"L_{k} of {len(x)} new images: " + " ".join(f"{b:.1f}" for b in bounds.tolist()) + " nats")


if __name__ == "__main__":
    main()
