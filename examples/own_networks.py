"""Train with your own encoder and decoder: the factories of `mynets.py`, named as FILE:FACTORY.

vaelab records the two names in the run's config.json, so `vaelab evaluate`, `train --resume`
and `load_run` rebuild the same networks later (given --trust-code / trust_code=True, as they
import the file). Expected output, last line (10 epochs; about -33 nats with --smoke):

    own networks: encoder mynets.py:encoder, test L_100 = -24.61 nats

Usage: python examples/own_networks.py [--smoke] [--out DIR]   (--smoke: 1 epoch, seconds)
"""

import argparse
import json
from pathlib import Path

from vaelab import ExperimentConfig, ModelConfig, TrainConfig, train

NETS = Path(__file__).resolve().with_name("mynets.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="1 epoch: a check that runs in seconds")
    parser.add_argument("--out", default="runs/own-networks", help="the run directory")
    args = parser.parse_args()

    epochs = 1 if args.smoke else 10
    config = ExperimentConfig(
        model=ModelConfig(latent_dim=8, encoder=f"{NETS}:encoder", decoder=f"{NETS}:decoder"),
        train=TrainConfig(algorithm="iwae", num_samples=5, epochs=epochs, eval_every=epochs, eval_k=100, eval_splits=("test",)),
    )
    result = train(config, args.out, overwrite=True, progress=False)
    recorded = json.loads((Path(args.out) / "config.json").read_text())["model"]["encoder"]
    row = [m for m in result.metrics if m["kind"] == "eval"][-1]
    print(f"own networks: encoder {Path(recorded).name}, test L_100 = {row['bound']:.2f} nats")


if __name__ == "__main__":
    main()
