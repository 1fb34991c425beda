"""Counter-based hashing: every random number is a pure function of integer keys.

The generator never draws from a stateful RNG while rendering. Each random quantity is a
hash of ``(stream key, cell ix, cell iy, draw index)``, so any block of any pyramid level
can be rendered alone, in any order, on any machine, and still agree bit for bit with its
neighbours.
"""

from __future__ import annotations

from typing import cast

import numpy as np

__all__ = ["cell_hash", "derive_key", "uniforms"]

_MASK64 = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_PRIME_Y = np.uint64(0xD6E8FEB86659FD93)
_S30, _S27, _S31, _S11 = (np.uint64(s) for s in (30, 27, 31, 11))


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a ``uint64`` array (wrapping arithmetic)."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return cast(np.ndarray, z ^ (z >> _S31))


def derive_key(seed: int, *labels: int | str) -> int:
    """A 64-bit stream key from a seed and labels (pure Python, platform independent)."""
    z = int(seed) & _MASK64
    for label in labels:
        if isinstance(label, str):
            value = 0
            for ch in label.encode():
                value = (value * 131 + ch) & _MASK64
        else:
            value = int(label) & _MASK64
        z = (z ^ value) & _MASK64
        z = (z + 0x9E3779B97F4A7C15) & _MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        z ^= z >> 31
    return z


def cell_hash(key: int, ix: np.ndarray | int, iy: np.ndarray | int) -> np.ndarray:
    """64-bit hash of integer lattice cells ``(ix, iy)`` (broadcast) under stream ``key``."""
    ux = np.asarray(ix, dtype=np.int64).astype(np.uint64)
    uy = np.asarray(iy, dtype=np.int64).astype(np.uint64)
    h = _mix(np.uint64(key) ^ (ux * _GOLDEN))
    return _mix(h ^ (uy * _PRIME_Y))


def uniforms(h: np.ndarray, n: int) -> np.ndarray:
    """``n`` independent uniforms in ``[0, 1)`` per hash: shape ``h.shape + (n,)``."""
    h = np.asarray(h, dtype=np.uint64)[..., None]
    draws = _mix(h + np.arange(1, n + 1, dtype=np.uint64) * _GOLDEN)
    return (draws >> _S11).astype(np.float64) * (1.0 / 9007199254740992.0)
