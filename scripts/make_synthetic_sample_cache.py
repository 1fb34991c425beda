"""Render the coarse levels of the bundled synthetic sample into sample_data/ (exact, lossless).

Run after any change to ``napari_sgnet/synthetic`` (``tests/test_synthetic_cache.py`` fails
until the cache matches the generator again)::

    python scripts/make_synthetic_sample_cache.py
"""

from __future__ import annotations

import logging
import sys
import time

from napari_sgnet._napari.samples import (
    SYNTHETIC_SAMPLE_SEED,
    SYNTHETIC_SAMPLE_SIZE,
    synthetic_cache_path,
)
from napari_sgnet.synthetic import sample_slide
from napari_sgnet.synthetic.cache import open_coarse_cache, write_coarse_cache


def main() -> int:
    logging.basicConfig(level=logging.INFO)
    slide = sample_slide(size=SYNTHETIC_SAMPLE_SIZE, seed=SYNTHETIC_SAMPLE_SEED)
    path = synthetic_cache_path(SYNTHETIC_SAMPLE_SIZE, SYNTHETIC_SAMPLE_SEED)
    t0 = time.perf_counter()
    write_coarse_cache(slide, path)
    if open_coarse_cache(path, slide.config) is None:
        raise SystemExit(f"{path}: written but not readable back")
    logging.info("wrote %s (%.1f MB) in %.1f s", path, path.stat().st_size / 1e6,
                 time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
