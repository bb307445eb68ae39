"""Train on your own data: a .npz file of images, then its test L_k.

Writes ``mydigits.npz`` (scikit-learn's 8x8 digits as uint8 images [N, 8, 8] with labels, the
format `docs/guide/data.md` describes) and trains AEVB on it from Python, exactly as
``vaelab train --dataset mydigits.npz`` would. Expected output, last line (20 epochs; about
-27 nats with --smoke):

    own data: test L_100 = -24.35 nats over 300 images

Usage: python examples/own_data.py [--smoke] [--out DIR]   (--smoke: 1 epoch, seconds)
"""

import argparse
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

from vaelab import DataConfig, ExperimentConfig, TrainConfig, train


def write_npz(path: Path) -> None:
    """The digits as uint8 images in 0-255, 1497 train and 300 test, with labels."""
    digits = load_digits()
    images = (digits.images * 255 / 16).round().astype("uint8")
    np.savez(path, train=images[:1497], train_labels=digits.target[:1497], test=images[1497:], test_labels=digits.target[1497:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="1 epoch: a check that runs in seconds")
    parser.add_argument("--out", default="runs/own-data", help="where the .npz and the run directory go")
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "mydigits.npz"
    write_npz(data)
    epochs = 1 if args.smoke else 20
    config = ExperimentConfig(
        # the path is recorded in the run's config.json, with the file's sha256 in environment.json
        data=DataConfig(dataset=str(data.resolve())),
        train=TrainConfig(algorithm="aevb", epochs=epochs, eval_every=epochs, eval_k=100, eval_splits=("test",)),
    )
    result = train(config, out / "run", overwrite=True, progress=False)
    row = [m for m in result.metrics if m["kind"] == "eval" and m["split"] == "test"][-1]
    print(f"own data: test L_100 = {row['bound']:.2f} nats over {row['num_images']} images")


if __name__ == "__main__":
    main()
