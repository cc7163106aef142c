"""The reference input pipeline for the benchmark: PIL decode, torchvision resize (nearest,
as Keras' loader, or bilinear), ToTensor and torch.stack into batches, on one thread.

Usage: pipeline_torchvision.py IMAGE_DIR SIZE BATCH REPEATS [nearest|bilinear]"""
import sys
import time
from pathlib import Path

import torch
from PIL import Image
from torchvision import transforms


def main(image_dir: str, size: int, batch_size: int, repeats: int, resize: str) -> None:
    torch.set_num_threads(1)
    mode = {
        "nearest": transforms.InterpolationMode.NEAREST,
        "bilinear": transforms.InterpolationMode.BILINEAR,
    }[resize]
    files = sorted(Path(image_dir).glob("*.jpg"))
    transform = transforms.Compose(
        [
            transforms.Resize((size, size), interpolation=mode),
            transforms.ToTensor(),
        ]
    )
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        checksum = 0.0
        for first in range(0, len(files), batch_size):
            batch = torch.stack(
                [transform(Image.open(f).convert("RGB")) for f in files[first : first + batch_size]]
            )
            checksum += float(batch[:, :, 0, 0].sum())
        elapsed = time.perf_counter() - start
        rate = len(files) / elapsed
        best = max(best, rate)
        print(f"torchvision {resize} 1 thread: {len(files)} images in {elapsed:.3f}s = {rate:.1f} img/s (checksum {checksum:.2f})")
    print(f"torchvision best: {best:.1f} img/s/core")


if __name__ == "__main__":
    resize = sys.argv[5] if len(sys.argv) > 5 else "nearest"
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), resize)
