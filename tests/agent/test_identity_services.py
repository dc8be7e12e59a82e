"""The recorder's per-row service column: one lookup per distinct process, same answer on every path."""

from __future__ import annotations

import os

import numpy as np

from kprobe.agent.identity import IdentityCache


def test_service_column_is_the_same_for_one_process_and_for_many():
    cache = IdentityCache()
    me = os.getpid()
    single = cache.services(np.full(4, me, dtype=np.uint32))
    mixed = cache.services(np.array([me, 0, me, os.getppid()], dtype=np.uint32))
    assert single.dtype == object and len(single) == 4 and len(set(single.tolist())) == 1
    assert mixed[0] == mixed[2] == single[0] and mixed[1] == ""
    assert list(cache.services(np.zeros(3, dtype=np.uint32))) == ["", "", ""]
    assert len(cache.services(np.empty(0, dtype=np.uint32))) == 0
