"""tracejit.utils.data: dataset wrappers, DataLoader order, shuffling, batching and default
collation."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest

import tracejit as tj
from tracejit.utils.data import (
    BatchSampler,
    ConcatDataset,
    DataLoader,
    Dataset,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
    Subset,
    TensorDataset,
    default_collate,
    random_split,
)


def make_ds(n: int = 10) -> TensorDataset:
    return TensorDataset(tj.arange(2 * n, dtype=tj.float32).reshape(n, 2), tj.arange(n))


def test_tensor_dataset_items_and_length_check():
    ds = make_ds()
    x, y = ds[3]
    assert x.tolist() == [6.0, 7.0] and y.item() == 3 and len(ds) == 10
    with pytest.raises(ValueError, match="Size mismatch"):
        TensorDataset(tj.zeros(3), tj.zeros(4))


def test_sequential_batches_and_drop_last():
    ds = make_ds()
    batches = list(DataLoader(ds, batch_size=4))
    assert [b[1].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert isinstance(batches[0], list) and batches[0][0].shape == (4, 2)
    assert len(DataLoader(ds, batch_size=4)) == 3
    dl = DataLoader(ds, batch_size=4, drop_last=True)
    assert len(dl) == 2 and [b[1].tolist() for b in dl] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_shuffle_is_a_permutation_reproducible_with_a_generator():
    ds = make_ds(20)

    def epoch(seed: int) -> list[int]:
        g = tj.Generator().manual_seed(seed)
        return [i for _, y in DataLoader(ds, batch_size=6, shuffle=True, generator=g)
                for i in y.tolist()]

    a, b, c = epoch(3), epoch(3), epoch(4)
    assert sorted(a) == list(range(20)) and a == b and a != c
    assert a != list(range(20))
    # each epoch of one loader draws a new order
    dl = DataLoader(ds, batch_size=20, shuffle=True, generator=tj.Generator().manual_seed(0))
    assert next(iter(dl))[1].tolist() != next(iter(dl))[1].tolist()
    # features stay paired with their labels
    for x, y in DataLoader(ds, batch_size=5, shuffle=True):
        np.testing.assert_array_equal(x.numpy()[:, 0], 2 * y.numpy())


def test_shuffle_uses_default_generator_when_seeded():
    ds = make_ds(15)
    tj.manual_seed(11)
    a = [y.tolist() for _, y in DataLoader(ds, batch_size=15, shuffle=True)]
    tj.manual_seed(11)
    b = [y.tolist() for _, y in DataLoader(ds, batch_size=15, shuffle=True)]
    assert a == b


class Pairs(Dataset):
    """Samples as (float, int, dict, str): exercises default_collate's per-type rules."""

    def __len__(self) -> int:
        return 5

    def __getitem__(self, i):
        return (float(i) / 2, i, {"a": tj.full((2,), float(i)), "b": np.array([i, i])}, f"s{i}")


def test_default_collation_of_numbers_tuples_dicts_strings():
    fl, it, d, s = next(iter(DataLoader(Pairs(), batch_size=3)))
    assert fl.dtype == tj.float64 and fl.tolist() == [0.0, 0.5, 1.0]
    assert it.dtype == tj.int64 and it.tolist() == [0, 1, 2]
    assert set(d) == {"a", "b"} and d["a"].shape == (3, 2) and d["b"].dtype == tj.int64
    assert s == ["s0", "s1", "s2"]
    Point = namedtuple("Point", "x y")
    out = default_collate([Point(1, 2.0), Point(3, 4.0)])
    assert isinstance(out, Point) and out.x.tolist() == [1, 3]
    assert default_collate([[1, 2], [3, 4]])[1].tolist() == [2, 4]
    assert default_collate([True, False]).dtype == tj.bool
    with pytest.raises(RuntimeError, match="equal size"):
        default_collate([[1, 2], [3]])


def test_custom_collate_fn_and_no_batching():
    ds = make_ds(6)
    seen = []

    def collate(batch):
        seen.append(len(batch))
        return tj.stack([x for x, _ in batch]).sum()

    out = [v.item() for v in DataLoader(ds, batch_size=4, collate_fn=collate)]
    assert seen == [4, 2] and out == [sum(range(8)), sum(range(8, 12))]
    single = list(DataLoader(ds, batch_size=None))
    assert len(single) == 6 and single[2][1].item() == 2


def test_subclassed_dataset_takes_the_general_path():
    class Doubled(TensorDataset):
        def __getitem__(self, i):
            x, y = super().__getitem__(i)
            return x * 2, y

    ds = Doubled(tj.arange(4.0), tj.arange(4))
    x, y = next(iter(DataLoader(ds, batch_size=4)))
    assert x.tolist() == [0.0, 2.0, 4.0, 6.0]


def test_subset_random_split_concat():
    ds = make_ds(10)
    sub = Subset(ds, [7, 2])
    assert len(sub) == 2 and sub[0][1].item() == 7
    a, b = random_split(ds, [7, 3], generator=tj.Generator().manual_seed(0))
    ids = sorted([a[i][1].item() for i in range(7)] + [b[i][1].item() for i in range(3)])
    assert ids == list(range(10))
    parts = random_split(ds, [0.5, 0.3, 0.2], generator=tj.Generator().manual_seed(0))
    assert [len(p) for p in parts] == [5, 3, 2]
    c, d = random_split(ds, [5, 5], generator=tj.Generator().manual_seed(1))
    c2, _ = random_split(ds, [5, 5], generator=tj.Generator().manual_seed(1))
    assert c.indices == c2.indices
    with pytest.raises(ValueError):
        random_split(ds, [3, 3])
    cat = ConcatDataset([ds, Subset(ds, [0])])
    assert len(cat) == 11 and cat[10][1].item() == 0 and cat[-1][1].item() == 0
    assert len(ds + ds) == 20


def test_samplers():
    assert list(SequentialSampler(range(3))) == [0, 1, 2]
    rs = RandomSampler(range(6), generator=tj.Generator().manual_seed(0))
    assert sorted(rs) == list(range(6))
    rep = list(RandomSampler(range(3), replacement=True, num_samples=10))
    assert len(rep) == 10 and set(rep) <= {0, 1, 2}
    assert list(BatchSampler(range(5), 2, drop_last=False)) == [[0, 1], [2, 3], [4]]
    assert len(BatchSampler(range(5), 2, drop_last=True)) == 2
    dl = DataLoader(make_ds(6), batch_sampler=BatchSampler(range(6), 3, False))
    assert [y.tolist() for _, y in dl] == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(ValueError):
        DataLoader(make_ds(), shuffle=True, sampler=SequentialSampler(range(10)))


def test_iterable_dataset():
    class Stream(IterableDataset):
        def __iter__(self):
            return iter(range(7))

    assert [b.tolist() for b in DataLoader(Stream(), batch_size=3)] == [[0, 1, 2], [3, 4, 5],
                                                                         [6]]
