"""Load foldtrain weights into PyTorch (scripts/foldtrain_torch.py) and compare probabilities.

Usage: pytorch_roundtrip.py WEIGHTS IO POOLING
IO holds `input` and `probs` (foldtrain's eval-mode softmax). Prints the max abs difference and exits 1
when it is 1e-5 or more.
"""

import sys
from pathlib import Path

import torch
from safetensors.numpy import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts"))
from foldtrain_torch import load_foldtrain_model  # noqa: E402


def main(weights, io, pooling):
    data = {k: torch.from_numpy(v) for k, v in load_file(io).items()}
    model = load_foldtrain_model(weights, pooling=pooling)
    probs = model.predict_proba(data["input"])
    diff = (probs - data["probs"]).abs().max().item()
    print(f"max_abs_diff={diff:.3e} shape={tuple(probs.shape)}")
    sys.exit(0 if diff < 1e-5 else 1)


if __name__ == "__main__":
    main(*sys.argv[1:])
