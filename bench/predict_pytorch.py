"""The PyTorch peer of `foldtrain predict` for bench/predict_vs_pytorch.sh: a results folder's
k-fold ensemble over new images, as a plain PyTorch eager script on one process.

The model is torchvision's DenseNet121 `features` with the trained head (scripts/foldtrain_torch.py
rebuilds it from each fold's best.safetensors). Preprocessing is the job's, done the usual
PyTorch way: PIL decodes, converts to RGB and resizes with the job's method (NEAREST by
default), torchvision's `to_tensor` scales by 1/255. Models and batches are channels-last, as
foldtrain's convolutions are. Batches of the job's batch size; each
batch goes through every fold and the softmax are averaged. Rows go to probabilities.csv and
predictions.csv in the same format and order as foldtrain's.

    predict_pytorch.py --model DIR --images-csv F --images-dir D --out DIR [--threads N]

Prints `pytorch wall_s=<s> images=<n> images_per_s=<r>` as its last line (process start to end).
"""

import argparse
import csv
import sys
import time
import tomllib
from pathlib import Path

_started = time.perf_counter()

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision.transforms.functional import to_tensor  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from foldtrain_torch import load_foldtrain_model  # noqa: E402

RESIZE = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--images-csv", type=Path, required=True)
    p.add_argument("--images-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    config = tomllib.loads((args.model / "config.toml").read_text())
    train, model_cfg = config.get("train", {}), config.get("model", {})
    size = int(train.get("image_size", 229))
    batch = int(train.get("batch_size", 32))
    resize = RESIZE[train.get("resize", "nearest")]
    if train.get("normalize", "unit") != "unit":
        raise SystemExit(f"{args.model}/config.toml: only train.normalize = 'unit' is handled here")
    with open(args.model / "probabilities.csv", newline="") as f:
        classes = next(csv.reader(f))[1:]
    folds = sorted((args.model / "folds").iterdir(), key=lambda d: int(d.name))
    models = [
        load_foldtrain_model(
            d / "best.safetensors",
            arch=model_cfg.get("arch", "densenet121"),
            pooling=model_cfg.get("pooling", "max"),
        ).to(memory_format=torch.channels_last)
        for d in folds
    ]
    with open(args.images_csv, newline="") as f:
        names = [row["filename"] for row in csv.DictReader(f)]

    def load(name):
        with Image.open(args.images_dir / name) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), resize)
            return to_tensor(im)

    args.out.mkdir(parents=True, exist_ok=True)
    with (
        open(args.out / "probabilities.csv", "w", newline="") as pf,
        open(args.out / "predictions.csv", "w", newline="") as lf,
        torch.inference_mode(),
    ):
        probs_w, labels_w = csv.writer(pf), csv.writer(lf)
        probs_w.writerow(["filename", *classes])
        labels_w.writerow(["filename", "label"])
        for start in range(0, len(names), batch):
            chunk = names[start : start + batch]
            x = torch.stack([load(n) for n in chunk]).contiguous(memory_format=torch.channels_last)
            mean = sum(torch.softmax(m(x), dim=1) for m in models) / len(models)
            for name, row in zip(chunk, mean.tolist()):
                probs_w.writerow([name, *row])
                labels_w.writerow([name, classes[max(range(len(row)), key=row.__getitem__)]])
    wall = time.perf_counter() - _started
    print(f"pytorch wall_s={wall:.2f} images={len(names)} images_per_s={len(names) / wall:.1f}")


if __name__ == "__main__":
    main()
