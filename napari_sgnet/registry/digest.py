"""The one weights digest of napari-sgnet, and the model id built from it (torch-free).

The digest is a digest **of the tensors**, not of the file bytes, so it is the same for a
checkpoint read from disk and for the loaded module (file metadata and tensor order in the file
do not matter). Scheme :data:`DIGEST_SCHEME`: SHA-256 over every tensor in name order, each
fed as the UTF-8 text ``"<name>|<dtype>|<d0>,<d1>,...|"`` (``dtype`` the safetensors code:
``F32``, ``BF16``, ``I64``, ...) followed by its raw little-endian bytes; the 64 hex digits are
the digest. :func:`weights_digest` computes it from a ``model.safetensors`` file without torch;
:func:`napari_sgnet.model.checkpoint.state_digest` from a module's ``state_dict``. Both feed
:func:`digest_tensors`.

The model id (:func:`model_id`) is ``<name>:<architecture hash[:12]>:<digest[:12]>``; it is the
resume key of a label store's done-map, the ``ModelInfo.model_id`` and the predictor cache key.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from napari_sgnet.registry.layout import CONFIG_NAME, ONNX_NAME, WEIGHTS_NAME, CheckpointError
from napari_sgnet.validate import json_depth_problem

__all__ = [
    "DIGEST_SCHEME",
    "MAX_HEADER_BYTES",
    "PICKLE_HINT",
    "digest_tensors",
    "model_id",
    "onnx_digest",
    "parse_safetensors_header",
    "weights_digest",
]

#: Name of the digest scheme (recorded in lineage records).
DIGEST_SCHEME = "sha256-tensors-v1"
MAX_HEADER_BYTES = 100 * 1024 * 1024
PICKLE_HINT = (
    "napari-sgnet never unpickles model files (unpickling can run arbitrary code); "
    "convert it to model.safetensors + config.json with save_checkpoint()"
)
_CHUNK = 1 << 22
_CACHE: dict[tuple[str, int, int], str] = {}
_CACHE_LOCK = threading.Lock()

#: One tensor fed to :func:`digest_tensors`: name, safetensors dtype code, shape, raw bytes.
TensorItem = tuple[str, str, Sequence[int], Iterable[bytes | memoryview]]


def digest_tensors(tensors: Iterable[TensorItem]) -> str:
    """The weights digest of some tensors (any order: they are sorted by name here).

    Parameters
    ----------
    tensors : iterable of (name, dtype, shape, chunks)
        ``dtype`` is the safetensors code (``"F32"``, ...); ``chunks`` yields the tensor's raw
        little-endian bytes, in one or several pieces. Chunks are consumed in name order.

    Returns
    -------
    str
        64 hex digits (see :data:`DIGEST_SCHEME`).
    """
    digest = hashlib.sha256()
    for name, dtype, shape, chunks in sorted(tensors, key=lambda item: item[0]):
        digest.update(f"{name}|{dtype}|{','.join(str(int(d)) for d in shape)}|".encode())
        for chunk in chunks:
            digest.update(chunk)
    return digest.hexdigest()


def model_id(name: str, architecture_hash: str, digest: str) -> str:
    """The id of a model: ``<name>:<architecture_hash[:12]>:<digest[:12]>``."""
    return f"{name}:{architecture_hash[:12]}:{digest[:12]}"


def parse_safetensors_header(path: Path, prefix: bytes, size: int) -> tuple[dict[str, Any], int]:
    """Validate a safetensors file's framing and return its JSON header.

    Parameters
    ----------
    path : Path
        The file (for messages).
    prefix : bytes
        The file's first bytes: at least the 8-byte length and the header (the whole file
        will do).
    size : int
        The file's size in bytes.

    Returns
    -------
    header, data_start : dict, int
        The header (``__metadata__`` included) and the offset where tensor data begins.

    Raises
    ------
    CheckpointError
        When the file is a pickle or zip archive, truncated, padded, or not safetensors.
    """
    problem = None
    n = int.from_bytes(prefix[:8], "little") if len(prefix) >= 8 else -1
    if n < 2 or n > MAX_HEADER_BYTES or prefix[8:9] != b"{":
        problem = "not a safetensors file"
    elif 8 + n > size:
        problem = f"truncated: header needs {8 + n} bytes but the file has {size}"
    elif 8 + n > len(prefix):
        raise ValueError(f"parse_safetensors_header needs the first {8 + n} bytes of {path}")
    if problem is not None:
        if prefix[:1] == b"\x80" and prefix[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
            raise CheckpointError(path, f"is a pickle file, not safetensors; {PICKLE_HINT}")
        if prefix[:4] == b"PK\x03\x04":
            raise CheckpointError(
                path, f"is a zip archive (torch.save format), not safetensors; {PICKLE_HINT}"
            )
        raise CheckpointError(path, f"{problem} (file of {size} bytes)")
    depth_problem = json_depth_problem(prefix[8 : 8 + n])
    if depth_problem is not None:
        raise CheckpointError(path, f"corrupt safetensors header: {depth_problem}")
    try:
        header = json.loads(prefix[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(path, f"corrupt safetensors header: {exc}") from exc
    if not isinstance(header, dict):
        raise CheckpointError(path, "corrupt safetensors header: not a JSON object")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
            _ = int(info["data_offsets"][0]), str(info["dtype"]), [int(d) for d in info["shape"]]
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise CheckpointError(path, f"corrupt safetensors header entry {name!r}") from exc
    if 8 + n + end != size:
        raise CheckpointError(
            path, f"truncated or padded: tensors need {8 + n + end} bytes, file has {size}"
        )
    return header, 8 + n


def _read_range(fh: BinaryIO, start: int, stop: int) -> Iterable[bytes]:
    fh.seek(start)
    left = stop - start
    while left > 0:
        block = fh.read(min(_CHUNK, left))
        if not block:
            return
        left -= len(block)
        yield block


def onnx_digest(folder: str | os.PathLike[str]) -> str:
    """The weights digest of an ONNX checkpoint folder: SHA-256 of ``model.onnx`` and then of
    every other file of the folder but ``config.json`` (external tensor data), by name.

    Raises
    ------
    CheckpointError
        When ``model.onnx`` cannot be read (naming it).
    """
    base = Path(folder)
    main = base / ONNX_NAME
    h = hashlib.sha256(b"onnx-v1|")
    try:
        others = (f for f in base.iterdir() if f.name not in (ONNX_NAME, CONFIG_NAME))
        for f in [main, *sorted(f for f in others if f.is_file())]:
            h.update(f.name.encode() + b"|")
            with f.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
    except OSError as exc:
        raise CheckpointError(main, f"cannot read the ONNX model: {exc}") from exc
    return h.hexdigest()


def weights_digest(path: str | os.PathLike[str]) -> str:
    """The weights digest of a ``model.safetensors`` file (or of a checkpoint folder's).

    Reads the file once per (path, size, modification time) and process; torch is not needed.

    Raises
    ------
    CheckpointError
        When the file is missing, unreadable or not a safetensors file (naming it).
    """
    file = Path(path)
    if file.is_dir():
        file = file / WEIGHTS_NAME
    try:
        stat = file.stat()
    except OSError as exc:
        raise CheckpointError(file, f"cannot read the weights: {exc}") from exc
    key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
    if cached is not None:
        return cached
    try:
        with file.open("rb") as fh:
            prefix = fh.read(8)
            n = int.from_bytes(prefix, "little") if len(prefix) == 8 else 0
            if 0 < n <= MAX_HEADER_BYTES:
                prefix += fh.read(n)
            header, start = parse_safetensors_header(file, prefix, stat.st_size)
            items = []
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                lo, hi = (int(v) for v in info["data_offsets"])
                items.append((name, str(info["dtype"]), info["shape"], (start + lo, start + hi)))
            items.sort(key=lambda item: item[0])
            value = digest_tensors(
                (name, dtype, shape, _read_range(fh, lo, hi))
                for name, dtype, shape, (lo, hi) in items
            )
    except OSError as exc:
        raise CheckpointError(file, f"cannot read the weights: {exc}") from exc
    with _CACHE_LOCK:
        _CACHE[key] = value
    return value
