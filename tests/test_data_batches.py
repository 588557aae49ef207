"""Training samples from an indexed dataset: the token stream, shuffling, DP shards, resume."""

import numpy as np
import pytest
import torch

from llmb.data import IndexedDataset, IndexedDatasetWriter
from llmb.engine.data import TokenBatches
from llmb.errors import LlmbError

SEQ_LEN = 8


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    rng = np.random.default_rng(1)
    prefix = tmp_path_factory.mktemp("batches") / "ds"
    with IndexedDatasetWriter(prefix, vocab_size=5000) as writer:
        for _ in range(40):
            writer.add_document(rng.integers(1, 5000, size=int(rng.integers(1, 30))))
    return IndexedDataset(prefix)


def take(batches, steps):
    return [next(batches) for _ in range(steps)]


def rows(batch_list):
    """Each sample as its seq_len + 1 tokens (the inputs plus the last label)."""
    return [
        row
        for tokens, labels in batch_list
        for row in torch.cat([tokens, labels[:, -1:]], dim=1).tolist()
    ]


def test_shapes_dtypes_and_labels(dataset):
    tokens, labels = next(TokenBatches(dataset, seq_len=SEQ_LEN, micro_batch=3))
    assert tokens.shape == labels.shape == (3, SEQ_LEN)
    assert tokens.dtype == labels.dtype == torch.int64
    assert torch.equal(tokens[:, 1:], labels[:, :-1])  # labels are the next tokens


def test_unshuffled_samples_rebuild_the_token_stream(dataset):
    stream = dataset.tokens.astype(np.int64)
    batches = TokenBatches(dataset, seq_len=SEQ_LEN, micro_batch=2, shuffle=False)
    n = batches.samples_per_epoch
    assert n == (len(stream) - 1) // SEQ_LEN
    got = rows(take(batches, n // 2))
    # Samples overlap by one token; their first seq_len tokens tile the stream.
    rebuilt = [t for row in got for t in row[:SEQ_LEN]] + got[-1][SEQ_LEN:]
    assert rebuilt == stream[: len(rebuilt)].tolist()


def test_shuffled_epoch_is_a_permutation_and_epochs_differ(dataset):
    plain = TokenBatches(dataset, seq_len=SEQ_LEN, micro_batch=1, shuffle=False)
    n = plain.samples_per_epoch
    epoch0 = rows(take(TokenBatches(dataset, seq_len=SEQ_LEN, micro_batch=1, seed=3), n))
    shuffled = TokenBatches(dataset, seq_len=SEQ_LEN, micro_batch=1, seed=3, consumed_samples=n)
    assert shuffled.epoch == 1
    epoch1 = rows(take(shuffled, n))
    ordered = rows(take(plain, n))
    assert sorted(epoch0) == sorted(ordered) == sorted(epoch1)
    assert epoch0 != ordered and epoch0 != epoch1
    other_seed = rows(take(TokenBatches(dataset, seq_len=SEQ_LEN, micro_batch=1, seed=4), n))
    assert other_seed != epoch0


def test_dp_shards_are_disjoint_and_union_is_the_single_rank_stream(dataset):
    micro, dp, steps = 2, 3, 5
    common = dict(seq_len=SEQ_LEN, micro_batch=micro, seed=7)
    single = rows(take(TokenBatches(dataset, **common), steps * dp))
    shards = [
        take(TokenBatches(dataset, **common, dp_rank=r, dp_size=dp), steps) for r in range(dp)
    ]
    # Step s of rank r is micro-batch s * dp + r of the single-rank stream.
    interleaved = [shards[r][s] for s in range(steps) for r in range(dp)]
    assert rows(interleaved) == single
    positions = [set(range(s * dp * micro + r * micro, s * dp * micro + (r + 1) * micro))
                 for r in range(dp) for s in range(steps)]
    assert len(set().union(*positions)) == sum(map(len, positions))  # disjoint sample numbers


def test_resume_from_saved_position_continues_identically(dataset):
    reference = TokenBatches(dataset, seq_len=SEQ_LEN, micro_batch=4, seed=11)
    expected = rows(take(reference, 30))  # crosses several epochs
    first = TokenBatches(dataset, seq_len=SEQ_LEN, micro_batch=4, seed=11)
    head = rows(take(first, 13))
    state = first.state_dict()
    assert state["consumed_samples"] == 52
    resumed = TokenBatches(dataset, seq_len=SEQ_LEN, micro_batch=4, seed=11)
    resumed.load_state_dict(state)
    assert head + rows(take(resumed, 17)) == expected


def test_resume_with_other_settings_is_refused(dataset):
    state = TokenBatches(dataset, seq_len=SEQ_LEN, micro_batch=1, seed=1).state_dict()
    with pytest.raises(LlmbError, match="seed"):
        TokenBatches(dataset, seq_len=SEQ_LEN, micro_batch=1, seed=2).load_state_dict(state)


def test_too_little_data_and_bad_ranks(dataset):
    with pytest.raises(LlmbError, match="fewer than one sample"):
        TokenBatches(dataset, seq_len=dataset.num_tokens, micro_batch=1)
    with pytest.raises(LlmbError, match="dp_rank"):
        TokenBatches(dataset, seq_len=SEQ_LEN, micro_batch=1, dp_rank=2, dp_size=2)
