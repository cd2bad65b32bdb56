"""Prepared dataset files that can be memory-mapped: uncompressed .npz members read in place, and written in chunks.

NumPy reads every .npz member into memory (its `mmap_mode` is ignored for archives). A member stored without
compression is, however, a plain .npy file at a fixed offset inside the zip, so `read_npz` maps it with np.memmap
and a run reads only the pages it touches. Compressed members (a user's own npz, files prepared by older ddflow
versions) are read into memory as before. `NpzStreamWriter` writes an uncompressed .npz member by member and each
member in chunks, so preparing a dataset never holds two copies of its largest array (ImageNet-64: 15.7 GB).
"""
from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path
from typing import Iterable

import numpy as np

from ..io import atomic_path

_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # the zip local file header (30 bytes)


def _member_offset(f, info: zipfile.ZipInfo) -> int:
    """Byte offset of a stored member's data in the archive file `f`."""
    f.seek(info.header_offset)
    fields = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size))
    if fields[0] != b"PK\x03\x04":
        raise ValueError(f"bad local header for member {info.filename}")
    name_len, extra_len = fields[-2], fields[-1]
    return info.header_offset + _LOCAL_HEADER.size + name_len + extra_len


def _map_member(path: Path, f, info: zipfile.ZipInfo) -> np.ndarray:
    f.seek(_member_offset(f, info))
    version = np.lib.format.read_magic(f)
    read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in read_header:
        raise ValueError(f"member {info.filename}: unsupported .npy version {version}")
    shape, fortran, dtype = read_header[version](f)
    if dtype.hasobject:
        raise ValueError(f"member {info.filename} holds Python objects")
    return np.memmap(path, dtype=dtype, mode="r", offset=f.tell(), shape=shape, order="F" if fortran else "C")


def read_npz(path: str | Path, mmap: bool = True) -> dict[str, np.ndarray]:
    """Every array of the npz at `path`; with `mmap`, uncompressed members are memory-mapped (read-only)."""
    path = Path(path)
    out = {}
    with zipfile.ZipFile(path) as z, open(path, "rb") as f:
        for info in z.infolist():
            if not info.filename.endswith(".npy"):
                continue
            key = info.filename[:-4]
            if mmap and info.compress_type == zipfile.ZIP_STORED:
                out[key] = _map_member(path, f, info)
            else:
                with z.open(info) as member:
                    out[key] = np.lib.format.read_array(member, allow_pickle=False)
    return out


class NpzStreamWriter:
    """Write an uncompressed .npz atomically, one member at a time; `add_chunks` takes a member's rows in pieces.

    with NpzStreamWriter(out) as w:
        w.add("y_train", labels)
        w.add_chunks("x_train", (n, 64, 64, 3), np.uint8, batches())
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __enter__(self) -> "NpzStreamWriter":
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        self._zip = zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        return self

    def __exit__(self, *exc) -> bool | None:
        if exc[0] is None:  # what made the file (ddflow.runtime.provenance), as a JSON string member
            from ..runtime import provenance
            self.add("provenance", np.array([json.dumps(provenance(), sort_keys=True)]))
        self._zip.close()
        return self._atomic.__exit__(*exc)

    def add(self, name: str, array: np.ndarray) -> None:
        self.add_chunks(name, array.shape, array.dtype, [array])

    def add_chunks(self, name: str, shape: tuple[int, ...], dtype, chunks: Iterable[np.ndarray]) -> None:
        dtype = np.dtype(dtype)
        written = 0
        with self._zip.open(f"{name}.npy", "w", force_zip64=True) as m:
            header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
            np.lib.format.write_array_header_2_0(m, header)
            for chunk in chunks:
                chunk = np.ascontiguousarray(chunk, dtype=dtype)
                if chunk.shape[1:] != tuple(shape[1:]):
                    raise ValueError(f"{name}: chunk of shape {chunk.shape} for an array of shape {shape}")
                m.write(chunk.data)   # the array's own buffer: no copy
                written += len(chunk)
                del chunk             # freed before the next chunk is made: one chunk in memory at a time
        if written != shape[0]:
            raise ValueError(f"{name}: wrote {written} rows, expected {shape[0]}")
