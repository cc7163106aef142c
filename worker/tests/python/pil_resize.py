"""Resize PNG images as Keras' loader does (PIL), for tests/resize_matches_pil.rs.

Usage: pil_resize.py IN_PNG OUT_DIR SIZE
Writes OUT_DIR/nearest.raw and OUT_DIR/bilinear.raw: SIZE x SIZE RGB bytes, row-major, from
`Image.resize((SIZE, SIZE), NEAREST | BILINEAR)` (keras.utils.load_img's call).
"""

import sys
from pathlib import Path

from PIL import Image


def main(src, out, size):
    image = Image.open(src).convert("RGB")
    for name, method in (("nearest", Image.NEAREST), ("bilinear", Image.BILINEAR)):
        resized = image.resize((size, size), method)
        (Path(out) / f"{name}.raw").write_bytes(resized.tobytes())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
