"""Packing against the unpacked documents: every next-token pair of slamkit's context-length
chunks exactly once, nothing else lost."""

import numpy as np
from references import slamkit_chunks

from jaxslm.data.packing import Packer


def _documents(count: int, longest: int, seed: int):
    """Documents whose tokens are globally unique consecutive ints, so a pair names its source."""
    rng = np.random.default_rng(seed)
    docs, start = [], 0
    for length in rng.integers(1, longest, size=count):
        docs.append(np.arange(start, start + length, dtype=np.int32))
        start += length + 1
    return docs


def _pack(docs, length, packer=None):
    packer = packer or Packer(length, open_rows=4)
    rows = [row for doc in docs for row in packer.add(doc, doc % 3)]
    return rows + packer.flush()


def test_every_pair_exactly_once_and_rows_well_formed():
    length = 64
    docs = _documents(300, longest=3 * length, seed=0)
    rows = _pack(docs, length)
    chunks = [chunk for doc in docs for chunk in slamkit_chunks(doc, length)]
    expected = sorted(int(t) for chunk in chunks for t in chunk[1:])
    seen = []
    for row in rows:
        real = row["loss_mask"] == 1
        assert (row["segment_ids"][~real] == 0).all() and (row["tokens"][~real] == 0).all()
        np.testing.assert_array_equal(row["targets"][real], row["tokens"][real] + 1)
        np.testing.assert_array_equal(row["modality"][real], row["targets"][real] % 3)
        segments = row["segment_ids"][real]
        assert (np.diff(segments) >= 0).all() and segments[0] == 1
        for number in np.unique(segments):
            where = row["segment_ids"] == number
            np.testing.assert_array_equal(row["positions"][where], np.arange(where.sum()))
            np.testing.assert_array_equal(np.diff(row["tokens"][where]), 1)
        seen.extend(int(t) for t in row["targets"][real])
    assert sorted(seen) == expected
    total = sum(len(chunk) - 1 for chunk in chunks)
    assert sum(row["loss_mask"].sum() for row in rows) == total
    assert len(rows) * length < 1.2 * total, "first-fit should leave little padding"


def test_every_target_keeps_the_stream_of_its_document():
    """Rows mixing documents of the three streams: each target's `stream` is that of the
    document it came from (the logged per-stream token shares count these)."""
    length = 64
    docs = _documents(200, longest=length, seed=2)
    stream_of = {int(t): i % 3 for i, doc in enumerate(docs) for t in doc}
    packer = Packer(length, open_rows=4)
    rows = [row for i, doc in enumerate(docs) for row in packer.add(doc, doc % 3, stream=i % 3)]
    rows += packer.flush()
    mixed = 0
    for row in rows:
        real = row["loss_mask"] == 1
        want = [stream_of[int(t)] for t in row["targets"][real]]
        np.testing.assert_array_equal(row["stream"][real], want)
        mixed += len(set(want)) > 1
    assert mixed > len(rows) // 4  # rows of several streams, not only whole documents


def test_a_piece_that_fills_a_row_exactly_completes_it():
    """First fit uses the last free position: two documents of 5 tokens (4 pairs each) fill a
    row of 8 and complete it at once, without padding."""
    packer = Packer(8, open_rows=4)
    first, second = np.arange(5, dtype=np.int32), np.arange(10, 15, dtype=np.int32)
    assert packer.add(first, first % 3) == []
    (row,) = packer.add(second, second % 3)
    assert row["loss_mask"].sum() == 8
    np.testing.assert_array_equal(row["segment_ids"], [1, 1, 1, 1, 2, 2, 2, 2])
    assert packer.flush() == []


def test_long_documents_are_cut_as_slamkit_cuts_them():
    doc = np.arange(1000, dtype=np.int32)
    rows = _pack([doc], 64)
    # 15 chunks of 64 tokens and one of 40: 15 x 63 + 39 targets; the tokens that start a
    # chunk (64, 128, ...) are inputs only, as in slamkit
    assert sum(row["loss_mask"].sum() for row in rows) == 15 * 63 + 39
    targets = {int(t) for row in rows for t in row["targets"][row["loss_mask"] == 1]}
    assert targets == set(range(1000)) - set(range(0, 1000, 64))
    assert len(rows) == 16


def test_state_restores_open_rows():
    docs = _documents(200, longest=100, seed=1)
    reference = _pack(docs, 48)
    first = Packer(48, open_rows=4)
    rows = [row for doc in docs[:90] for row in first.add(doc, doc % 3)]
    second = Packer(48, open_rows=4)
    second.set_state(first.get_state())
    rows += _pack(docs[90:], 48, packer=second)
    assert len(rows) == len(reference)
    for ours, theirs in zip(rows, reference, strict=True):
        for name in theirs:
            np.testing.assert_array_equal(ours[name], theirs[name])
