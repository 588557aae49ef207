"""Megatron-style indexed datasets: ``PREFIX.bin`` holds the tokens, ``PREFIX.idx`` the index.

The on-disk format is the one of Megatron-Core's ``IndexedDataset`` (formerly
``MMapIndexedDataset``), so files written here train in Megatron-LM and files written by
Megatron's ``tools/preprocess_data.py`` train here.

``PREFIX.bin`` is the token ids of every sequence back to back, in the token dtype, with no
header. ``PREFIX.idx`` is, all integers little-endian::

    offset  size          field
    0       9             magic b"MMIDIDX\\x00\\x00"
    9       8  uint64     version, always 1
    17      1  uint8      token dtype code (see DTYPE_CODES)
    18      8  uint64     S, number of sequences
    26      8  uint64     D, number of entries in the document index (documents + 1)
    34      4*S int32     length of each sequence, in tokens
    ..      8*S int64     start of each sequence in PREFIX.bin, in bytes
    ..      8*D int64     document index: document d is sequences [idx[d], idx[d+1])

Megatron can split a document into several sequences (sentences); ``preprocess_data.py``
without ``--split-sentences`` writes one sequence per document, and so does
:class:`IndexedDatasetWriter`. Token dtype: uint16 when the vocabulary has fewer than 65,500
entries, else int32, the rule Megatron uses.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from types import TracebackType

import numpy as np

from llmb.errors import LlmbError

INDEX_MAGIC = b"MMIDIDX\x00\x00"
INDEX_VERSION = 1
HEADER_BYTES = 34  # magic 9 + version 8 + dtype code 1 + sequence count 8 + document count 8

# Megatron-Core's numeric codes for the token dtype, stored in byte 17 of the index.
DTYPE_CODES: dict[int, type[np.number]] = {
    1: np.uint8,
    2: np.int8,
    3: np.int16,
    4: np.int32,
    5: np.int64,
    6: np.float64,
    7: np.float32,
    8: np.uint16,
}
_CODE_OF_DTYPE = {np.dtype(t): code for code, t in DTYPE_CODES.items()}

# Megatron picks uint16 strictly below this vocabulary size (not 65536: it keeps a margin).
UINT16_VOCAB_LIMIT = 65500


def token_dtype_for_vocab(vocab_size: int) -> np.dtype:
    """The token dtype Megatron uses for a vocabulary of ``vocab_size`` entries."""
    return np.dtype(np.uint16 if vocab_size < UINT16_VOCAB_LIMIT else np.int32)


def bin_path(prefix: str | os.PathLike) -> Path:
    """Path of the token data file of the dataset at ``prefix``."""
    return Path(f"{os.fspath(prefix)}.bin")


def idx_path(prefix: str | os.PathLike) -> Path:
    """Path of the index file of the dataset at ``prefix``."""
    return Path(f"{os.fspath(prefix)}.idx")


def _tmp(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


class IndexedDatasetWriter:
    """Writes documents of token ids to ``PREFIX.bin`` + ``PREFIX.idx``, one sequence each.

    Use as a context manager; the files appear (atomically, by rename) only when the block
    ends without an exception, so an interrupted run never leaves a half-written dataset::

        with IndexedDatasetWriter("data/wiki", vocab_size=32000) as writer:
            writer.add_document([17, 42, 0])

    Give ``vocab_size`` (picks the dtype as Megatron does and checks every id is below it)
    or ``dtype`` directly. Parent folders are created.
    """

    def __init__(
        self,
        prefix: str | os.PathLike,
        *,
        vocab_size: int | None = None,
        dtype: np.dtype | type | str | None = None,
    ):
        if (vocab_size is None) == (dtype is None):
            raise ValueError("give exactly one of vocab_size and dtype")
        self.prefix = os.fspath(prefix)
        self.vocab_size = vocab_size
        self.dtype = np.dtype(dtype) if dtype is not None else token_dtype_for_vocab(vocab_size)
        if self.dtype not in _CODE_OF_DTYPE:
            raise ValueError(f"dtype {self.dtype} has no Megatron dtype code")
        self._bin_path, self._idx_path = bin_path(prefix), idx_path(prefix)
        self._sequence_lengths: list[int] = []
        self.num_tokens = 0
        self._bin = None
        try:
            self._bin_path.parent.mkdir(parents=True, exist_ok=True)
            self._bin = open(_tmp(self._bin_path), "wb")
        except OSError as exc:
            raise LlmbError(f"cannot write {self._bin_path}: {exc.strerror or exc}") from None

    @property
    def num_documents(self) -> int:
        """Documents added so far."""
        return len(self._sequence_lengths)

    def add_document(self, tokens) -> None:
        """Append one document (a sequence of token ids) as one sequence."""
        array = np.asarray(tokens)
        if array.ndim != 1:
            raise ValueError(f"a document is a 1-D sequence of token ids, got shape {array.shape}")
        if array.size:
            low, high = int(array.min()), int(array.max())
            bound = self.vocab_size if self.vocab_size is not None else _dtype_limit(self.dtype)
            if low < 0 or high >= bound:
                raise LlmbError(f"token id {low if low < 0 else high} outside [0, {bound})")
        self._bin.write(array.astype(self.dtype, copy=False).tobytes(order="C"))
        self._sequence_lengths.append(int(array.size))
        self.num_tokens += int(array.size)

    def finalize(self) -> None:
        """Write the index and move both files into place."""
        self._bin.close()
        lengths = np.asarray(self._sequence_lengths, dtype=np.int32)
        starts_bytes = np.zeros(len(lengths), dtype=np.int64)
        np.cumsum(lengths[:-1], dtype=np.int64, out=starts_bytes[1:])
        starts_bytes *= self.dtype.itemsize
        # One sequence per document: document d is sequence d.
        document_index = np.arange(len(lengths) + 1, dtype=np.int64)
        try:
            with open(_tmp(self._idx_path), "wb") as f:
                f.write(INDEX_MAGIC)
                f.write(struct.pack("<Q", INDEX_VERSION))
                f.write(struct.pack("<B", _CODE_OF_DTYPE[self.dtype]))
                f.write(struct.pack("<Q", len(lengths)))
                f.write(struct.pack("<Q", len(document_index)))
                f.write(lengths.astype("<i4").tobytes())
                f.write(starts_bytes.astype("<i8").tobytes())
                f.write(document_index.astype("<i8").tobytes())
            os.replace(_tmp(self._bin_path), self._bin_path)
            os.replace(_tmp(self._idx_path), self._idx_path)
        except OSError as exc:
            raise LlmbError(f"cannot write {self._idx_path}: {exc.strerror or exc}") from None

    def abort(self) -> None:
        """Close and delete the partial files."""
        if self._bin is not None:
            self._bin.close()
        for path in (_tmp(self._bin_path), _tmp(self._idx_path)):
            path.unlink(missing_ok=True)

    def __enter__(self) -> IndexedDatasetWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.finalize()
        else:
            self.abort()


def _dtype_limit(dtype: np.dtype) -> int:
    return int(np.iinfo(dtype).max) + 1 if dtype.kind in "iu" else 2**53


class IndexedDataset:
    """A memory-mapped reader of ``PREFIX.bin`` + ``PREFIX.idx``.

    ``ds[i]`` is sequence ``i`` (a read-only NumPy view, no copy); with files written by
    :class:`IndexedDatasetWriter` or by Megatron without ``--split-sentences`` a sequence is a
    document. :attr:`tokens` is the whole token stream, every sequence back to back.
    """

    def __init__(self, prefix: str | os.PathLike):
        self.prefix = os.fspath(prefix)
        self.idx_path, self.bin_path = idx_path(prefix), bin_path(prefix)
        for path in (self.idx_path, self.bin_path):
            if not path.is_file():
                raise LlmbError(f"no indexed dataset at {self.prefix}: {path} not found")
        idx_bytes = self.idx_path.stat().st_size
        with open(self.idx_path, "rb") as f:
            header = f.read(HEADER_BYTES)
        if len(header) < HEADER_BYTES or header[:9] != INDEX_MAGIC:
            raise LlmbError(f"{self.idx_path} is not a Megatron index (bad magic)")
        version, code, sequence_count, document_count = struct.unpack("<QBQQ", header[9:])
        if version != INDEX_VERSION:
            raise LlmbError(f"{self.idx_path}: index version {version}, expected {INDEX_VERSION}")
        if code not in DTYPE_CODES:
            raise LlmbError(f"{self.idx_path}: unknown token dtype code {code}")
        self.dtype = np.dtype(DTYPE_CODES[code]).newbyteorder("<")
        needed = HEADER_BYTES + 12 * sequence_count + 8 * document_count
        if idx_bytes < needed:
            raise LlmbError(f"{self.idx_path} is truncated ({idx_bytes} bytes, {needed} needed)")

        index = np.memmap(self.idx_path, mode="r", dtype=np.uint8)
        offset = HEADER_BYTES
        self.sequence_lengths = np.frombuffer(index, "<i4", sequence_count, offset)
        offset += 4 * sequence_count
        self.sequence_starts_bytes = np.frombuffer(index, "<i8", sequence_count, offset)
        offset += 8 * sequence_count
        self.document_index = np.frombuffer(index, "<i8", document_count, offset)

        self.num_tokens = int(self.sequence_lengths.sum(dtype=np.int64))
        bin_bytes = self.bin_path.stat().st_size
        if sequence_count:
            last_length_bytes = int(self.sequence_lengths[-1]) * self.dtype.itemsize
            end = int(self.sequence_starts_bytes[-1]) + last_length_bytes
            if end > bin_bytes:
                raise LlmbError(f"{self.bin_path} is truncated ({bin_bytes} bytes, {end} needed)")
        # mmap of an empty file fails; an empty dataset is legal, so give it an empty array.
        if bin_bytes:
            self._data = np.memmap(self.bin_path, mode="r", dtype=self.dtype)
        else:
            self._data = np.empty(0, self.dtype)
        expected_starts = np.zeros(sequence_count, dtype=np.int64)
        np.cumsum(self.sequence_lengths[:-1], dtype=np.int64, out=expected_starts[1:])
        # Files written by a builder are contiguous; only then is the .bin the token stream.
        self.contiguous = bool(
            np.array_equal(expected_starts * self.dtype.itemsize, self.sequence_starts_bytes)
        )

    @property
    def num_sequences(self) -> int:
        return len(self.sequence_lengths)

    @property
    def num_documents(self) -> int:
        return max(len(self.document_index) - 1, 0)

    @property
    def tokens(self) -> np.ndarray:
        """Every token id in file order: the concatenation of all sequences."""
        if not self.contiguous:
            raise LlmbError(f"{self.bin_path}: sequences are not stored back to back")
        return self._data[: self.num_tokens]

    def __len__(self) -> int:
        return self.num_sequences

    def __getitem__(self, i: int) -> np.ndarray:
        if not -self.num_sequences <= i < self.num_sequences:
            raise IndexError(f"sequence {i} out of range for {self.num_sequences} sequences")
        i %= self.num_sequences
        start = int(self.sequence_starts_bytes[i]) // self.dtype.itemsize
        return self._data[start : start + int(self.sequence_lengths[i])]

    def document(self, d: int) -> np.ndarray:
        """The tokens of document ``d`` (all its sequences, concatenated)."""
        first, last = int(self.document_index[d]), int(self.document_index[d + 1])
        if last == first:
            return self._data[:0]
        return np.concatenate([self[i] for i in range(first, last)])

    def vocab_bound(self, chunk_tokens: int = 1 << 24) -> int:
        """Largest token id + 1 (0 when empty): the smallest vocabulary that can train on it.

        Scans the whole ``.bin`` in chunks of ``chunk_tokens`` tokens.
        """
        data = self._data
        high = -1
        for start in range(0, len(data), chunk_tokens):
            high = max(high, int(data[start : start + chunk_tokens].max()))
        return high + 1
