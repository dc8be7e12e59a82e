"""Arrow string columns from the agent's object columns, dictionary-encoded when values repeat.

Why: the Kafka wire format and the embedded store both hand the agent's columns to Arrow, and
their string columns (comm, syscall name, host, service) repeat a handful of values. As
dictionary arrays they are built at integer speed and stored without hashing every row's string
again (chDB maps a few distinct values into a LowCardinality column).
"""

from __future__ import annotations

import ctypes

import numpy as np
import pandas as pd
import pyarrow as pa


def object_ids(values: np.ndarray) -> np.ndarray:
    """The object pointers of a C-contiguous object array, as uint64 (a view: no reference taken).

    The agent's string columns repeat a handful of str objects (``np.full``, ``NAMES[nr]``,
    ``decoded[inverse]``), so grouping rows by object identity is grouping by value up to
    duplicates, at integer speed: hashing the str objects themselves cost ~45 ns a row.
    """
    return np.ctypeslib.as_array((ctypes.c_uint64 * len(values)).from_address(values.ctypes.data))


def string_array(values: np.ndarray) -> pa.Array:
    """An object column of str (None = null) as Arrow: a dictionary array when values repeat.

    Rows are grouped by object identity (:func:`object_ids`), then equal strings held by distinct
    objects are merged, so the dictionary holds each value once. A column of mostly distinct
    values (paths, cmdlines) stays a plain string array, where a dictionary only adds indexes.
    """
    n = len(values)
    if n == 0:
        return pa.array([], type=pa.string())
    values = np.ascontiguousarray(values)
    ids = object_ids(values)
    if (ids == ids[0]).all():  # one object (host, a single service): no hashing at all
        v = values[0]
        dictionary = pa.array([] if v is None else [v if isinstance(v, str) else _text(v)], type=pa.string())
        return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32), mask=np.full(n, v is None)),
                                              dictionary)
    codes, _ = pd.factorize(ids)
    k = int(codes.max()) + 1
    if k * 2 > n:  # many objects: maybe equal strings in distinct objects (hashing them is slower)
        codes, _ = pd.factorize(values, use_na_sentinel=False)
        k = int(codes.max()) + 1
        if k * 2 > n:
            return pa.array(values, type=pa.string())
    rep = np.empty(k, dtype=np.int64)
    rep[codes] = np.arange(n)  # a row of each object (which one does not matter: same object)
    slot: dict[str, int] = {}
    remap = np.empty(k, dtype=np.int32)
    for i, o in enumerate(values[rep].tolist()):  # None (a null row) gets no dictionary value
        remap[i] = -1 if o is None else slot.setdefault(o if isinstance(o, str) else _text(o), len(slot))
    indices = remap[codes]
    mask = None
    if (remap < 0).any():
        mask = indices < 0
        indices[mask] = 0
    return pa.DictionaryArray.from_arrays(pa.array(indices, mask=mask), pa.array(list(slot), type=pa.string()))


def _text(o: object) -> str:
    return o.decode() if isinstance(o, bytes) else str(o)
