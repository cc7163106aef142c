"""Writes synthetic 336x336 endoscopy-like JPEGs (quality 90) for the input pipeline benchmark.

Smooth shading, blotches and fine noise, so that JPEG decoding costs about what real frames cost
(flat colours decode far faster than real content).
"""
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter


def main(out_dir: str, count: int) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    size = 336
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for i in range(count):
        base = np.stack(
            [
                150 + 80 * np.sin(3 * xx + i) * np.cos(2 * yy),
                80 + 60 * np.cos(4 * yy + 0.3 * i),
                60 + 40 * np.sin(5 * (xx + yy)),
            ],
            axis=-1,
        )
        blotches = rng.normal(0, 40, (size // 8, size // 8, 3))
        blotches = np.kron(blotches, np.ones((8, 8, 1)))
        noise = rng.normal(0, 12, (size, size, 3))
        pixels = np.clip(base + blotches + noise, 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(1.2))
        # Fine detail after the blur, like mucosa texture and sensor noise.
        detail = rng.normal(0, 6, (size, size, 3))
        pixels = np.clip(np.asarray(image, dtype=np.float32) + detail, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(out / f"frame_{i:04d}.jpg", quality=90)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 200)
