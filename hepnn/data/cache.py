"""A cache of preprocessed chunks, so that epochs after the first skip ROOT reading and preprocessing.

One file per chunk (raw arrays behind a JSON header, read back as a read-only memory map), under
a directory named by a hash of the data spec: a
changed spec (variables, inputs, standardisation, selection, labels, ...) uses a new directory,
and a changed input file has a new identity (its ROOT UUID), so stale data is never read. Files
are written under a temporary name and renamed, so a crash leaves no partial entry.

``memory`` puts the directory in ``/dev/shm`` (RAM shared by all processes of a node: DataLoader
workers and DDP ranks) and removes it when the process that chose it exits; ``disk`` keeps it
under ``data.cache_dir`` across runs. Either grows with the dataset: it is the one part of the
loader whose memory is not bounded by ``chunk_size``/``buffer_size``.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from hepnn.data.preprocess import ChunkData
from hepnn.data.spec import DataSpec
from hepnn.errors import ConfigError

CACHE_MODES = (None, "memory", "disk")
_MEMORY_ENV = "HEPNN_MEMORY_CACHE_DIR"
FORMAT_VERSION = 3
# Bytes of chunk files a process keeps mapped between loads (see ChunkCache). Page tables for all
# of it, once touched, take 1/512 of that: 16 MiB.
MAPPED_BYTES_LIMIT = 8 * 2**30


def spec_hash(spec: DataSpec) -> str:
    """A short hash of everything in the spec that changes the preprocessed arrays."""
    text = json.dumps({"version": FORMAT_VERSION, "spec": spec.to_config()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def memory_cache_root() -> Path:
    """A RAM-backed directory shared by this run's processes (inherited by DDP ranks via the environment)."""
    existing = os.environ.get(_MEMORY_ENV)
    if existing:
        return Path(existing)
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix="hepnn-cache-", dir=base))
    os.environ[_MEMORY_ENV] = str(path)
    creator = os.getpid()
    atexit.register(lambda: os.getpid() == creator and shutil.rmtree(path, ignore_errors=True))
    return path


def cache_directory(mode: str | None, cache_dir: str | os.PathLike | None, spec: DataSpec) -> Path | None:
    """The chunk cache directory for ``mode`` (``None``: no cache)."""
    if mode not in CACHE_MODES:
        raise ConfigError(f"data.cache must be one of null, memory, disk; got {mode!r}")
    if mode is None:
        return None
    if mode == "memory":
        root = memory_cache_root()
    else:
        if not cache_dir:
            raise ConfigError("data.cache=disk needs data.cache_dir (a local directory)")
        root = Path(cache_dir).expanduser() / "chunks"
    return root / spec_hash(spec)


HEADER_BYTES = 8  # little-endian length of the JSON header that follows
ALIGN = 64


def write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """One file: a JSON header (name, dtype, shape, byte offset of each array), then the raw data."""
    layout = {}
    position = 0
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        layout[name] = {"dtype": array.dtype.str, "shape": list(array.shape), "offset": position}
        position += -(-array.nbytes // ALIGN) * ALIGN
    header = json.dumps(layout).encode()
    start = -(-(HEADER_BYTES + len(header)) // ALIGN) * ALIGN
    with open(path, "wb") as out:
        out.write(len(header).to_bytes(HEADER_BYTES, "little"))
        out.write(header)
        for name, array in arrays.items():
            out.seek(start + layout[name]["offset"])
            out.write(np.ascontiguousarray(array).tobytes())
        out.truncate(start + position)


def map_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a :func:`write_arrays` file as read-only views of one memory map (no copy)."""
    with open(path, "rb") as handle:
        size = int.from_bytes(handle.read(HEADER_BYTES), "little")
        layout = json.loads(handle.read(size))
    start = -(-(HEADER_BYTES + size) // ALIGN) * ALIGN
    mapped = np.memmap(path, dtype=np.uint8, mode="r")
    arrays = {}
    for name, entry in layout.items():
        dtype = np.dtype(entry["dtype"])
        count = int(np.prod(entry["shape"], dtype=np.int64))
        first = start + entry["offset"]
        raw = mapped[first : first + count * dtype.itemsize]
        arrays[name] = np.ndarray(entry["shape"], dtype=dtype, buffer=raw)
    return arrays


class ChunkCache:
    """Preprocessed chunks in ``directory``, keyed by file identity and entry range.

    Each chunk is one file read back as a memory map: loading costs no copy, and in ``/dev/shm``
    the pages are shared by every process that reads the chunk.

    A process keeps the chunks it mapped mapped, up to ``mapped_bytes_limit`` bytes (the least
    recently loaded go first), so that later epochs find them mapped: a chunk mapped anew costs a
    page fault for every 64 KiB read from it (the kernel maps a file's pages around a fault that
    many at a time), every epoch. Keeping a map adds no memory in ``/dev/shm`` (the pages are the
    file's) and only clean, reclaimable page cache on disk; a process's resident size counts the
    mapped pages it has read, as every process that maps the same file does.
    """

    def __init__(self, directory: str | os.PathLike, mapped_bytes_limit: int = MAPPED_BYTES_LIMIT):
        self.directory = Path(directory)
        self.mapped_bytes_limit = mapped_bytes_limit
        self._mapped: OrderedDict[Path, dict[str, np.ndarray]] = OrderedDict()  # oldest first
        self._mapped_bytes = 0

    def __getstate__(self):
        state = self.__dict__.copy()  # a worker maps its chunks itself
        state["_mapped"] = OrderedDict()
        state["_mapped_bytes"] = 0
        return state

    def _path(self, chunk) -> Path:
        return self.directory / f"{chunk.file_id}_{chunk.start}_{chunk.stop}.chunk"

    def load(self, chunk) -> ChunkData | None:
        """The cached chunk (read-only arrays), or None if it is not cached yet."""
        path = self._path(chunk)
        arrays = self._mapped.get(path)
        if arrays is not None:
            self._mapped.move_to_end(path)
            return ChunkData.from_arrays(arrays, mapped=True)
        try:
            arrays = map_arrays(path)
        except FileNotFoundError:
            return None
        self._keep(path, arrays)
        return ChunkData.from_arrays(arrays, mapped=True)

    def _keep(self, path: Path, arrays: dict[str, np.ndarray]) -> None:
        self._mapped[path] = arrays
        self._mapped_bytes += sum(a.nbytes for a in arrays.values())
        while self._mapped_bytes > self.mapped_bytes_limit and len(self._mapped) > 1:
            _, oldest = self._mapped.popitem(last=False)  # unmapped once nothing else uses it
            self._mapped_bytes -= sum(a.nbytes for a in oldest.values())

    def store(self, chunk, data: ChunkData) -> None:
        """Cache ``data`` for ``chunk`` (atomically; concurrent writers of the same chunk are harmless)."""
        path = self._path(chunk)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            write_arrays(tmp, data.to_arrays())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
