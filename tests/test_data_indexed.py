"""The indexed dataset: Megatron's on-disk layout, byte for byte, and the reader."""

import struct

import numpy as np
import pytest

from llmb.data import IndexedDataset, IndexedDatasetWriter, token_dtype_for_vocab
from llmb.errors import LlmbError

DOCS = [[5, 6, 7], [1], [9, 8, 7, 6, 5, 4], [300, 2]]


def write(prefix, docs, **kwargs):
    kwargs = kwargs or {"vocab_size": 1000}
    with IndexedDatasetWriter(prefix, **kwargs) as writer:
        for doc in docs:
            writer.add_document(doc)


def test_round_trip(tmp_path):
    write(tmp_path / "ds", DOCS)
    ds = IndexedDataset(tmp_path / "ds")
    assert ds.num_sequences == ds.num_documents == len(ds) == 4
    assert ds.num_tokens == 12
    assert ds.dtype == np.uint16
    for i, doc in enumerate(DOCS):
        assert ds[i].tolist() == doc
        assert ds.document(i).tolist() == doc
    assert ds[-1].tolist() == DOCS[-1]
    assert ds.tokens.tolist() == [t for doc in DOCS for t in doc]
    assert ds.vocab_bound() == 301
    with pytest.raises(IndexError):
        ds[4]


def test_index_bytes_follow_megatron_layout(tmp_path):
    write(tmp_path / "ds", DOCS)
    lengths = [3, 1, 6, 2]
    starts_bytes = [0, 6, 8, 20]  # uint16: 2 bytes a token
    expected = (
        b"MMIDIDX\x00\x00"
        + struct.pack("<Q", 1)  # version
        + struct.pack("<B", 8)  # Megatron's code for uint16
        + struct.pack("<Q", 4)  # sequences
        + struct.pack("<Q", 5)  # document index entries: documents + 1
        + struct.pack("<4i", *lengths)
        + struct.pack("<4q", *starts_bytes)
        + struct.pack("<5q", 0, 1, 2, 3, 4)
    )
    assert (tmp_path / "ds.idx").read_bytes() == expected
    tokens = [t for doc in DOCS for t in doc]
    assert (tmp_path / "ds.bin").read_bytes() == struct.pack(f"<{len(tokens)}H", *tokens)


def test_int32_for_large_vocab_and_its_code(tmp_path):
    assert token_dtype_for_vocab(65499) == np.uint16
    assert token_dtype_for_vocab(65500) == np.int32  # Megatron's margin, not 65536
    write(tmp_path / "big", [[70000, 1]], vocab_size=128256)
    assert (tmp_path / "big.idx").read_bytes()[17] == 4  # int32
    ds = IndexedDataset(tmp_path / "big")
    assert ds.dtype == np.int32 and ds.tokens.tolist() == [70000, 1]


def test_reads_multi_sequence_documents(tmp_path):
    # Megatron with --split-sentences stores several sequences per document; read those too.
    prefix = tmp_path / "split"
    tokens = np.array([1, 2, 3, 4, 5, 6], dtype="<u2")
    (tmp_path / "split.bin").write_bytes(tokens.tobytes())
    idx = (
        b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, 8, 3, 3)
        + struct.pack("<3i", 2, 1, 3) + struct.pack("<3q", 0, 4, 6) + struct.pack("<3q", 0, 2, 3)
    )
    (tmp_path / "split.idx").write_bytes(idx)
    ds = IndexedDataset(prefix)
    assert ds.num_sequences == 3 and ds.num_documents == 2
    assert ds.document(0).tolist() == [1, 2, 3] and ds.document(1).tolist() == [4, 5, 6]
    assert ds.tokens.tolist() == [1, 2, 3, 4, 5, 6]


def test_failed_write_leaves_no_files(tmp_path):
    with pytest.raises(RuntimeError):
        with IndexedDatasetWriter(tmp_path / "ds", vocab_size=10) as writer:
            writer.add_document([1, 2])
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_token_outside_vocab_is_refused(tmp_path):
    with pytest.raises(LlmbError, match="outside"):
        write(tmp_path / "ds", [[1, 10]], vocab_size=10)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda b: b"NOTMEGA\x00\x00" + b[9:], "bad magic"),
        (lambda b: b[:9] + struct.pack("<Q", 2) + b[17:], "version 2"),
        (lambda b: b[:17] + b"\x63" + b[18:], "dtype code 99"),
        (lambda b: b[:40], "truncated"),
    ],
)
def test_corrupt_index_is_one_clear_error(tmp_path, corrupt, message):
    write(tmp_path / "ds", DOCS)
    idx = tmp_path / "ds.idx"
    idx.write_bytes(corrupt(idx.read_bytes()))
    with pytest.raises(LlmbError, match=message):
        IndexedDataset(tmp_path / "ds")


def test_missing_dataset(tmp_path):
    with pytest.raises(LlmbError, match="not found"):
        IndexedDataset(tmp_path / "nothing")


def test_megatron_core_reads_and_writes_the_same_bytes(tmp_path):
    """Runs only where megatron-core is installed (it is not a dependency of llmb)."""
    megatron = pytest.importorskip("megatron.core.datasets.indexed_dataset")
    import torch

    docs = [np.array(doc) for doc in DOCS]
    builder = megatron.IndexedDatasetBuilder(str(tmp_path / "m.bin"), dtype=np.uint16)
    for doc in docs:
        builder.add_document(torch.tensor(doc), [len(doc)])
    builder.finalize(str(tmp_path / "m.idx"))
    write(tmp_path / "ours", DOCS)
    for suffix in (".bin", ".idx"):
        assert (tmp_path / f"m{suffix}").read_bytes() == (tmp_path / f"ours{suffix}").read_bytes()
    theirs = megatron.IndexedDataset(str(tmp_path / "ours"))
    assert [theirs[i].tolist() for i in range(len(theirs))] == DOCS
