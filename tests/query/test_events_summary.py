"""`kprobe events` one-line summaries of off-CPU rows: who held the CPU a run-queue wait ended on."""

from __future__ import annotations

from kprobe.query.events import summary

ROW = {"type": "offcpu", "comm": "settlement", "tgid": 20, "tid": 21, "dur_ns": 400_000_000, "reason": "sleep",
       "cpu_off": 1, "cpu_on": 1, "preemptor_comm": "tool", "preemptor_tgid": 50, "preemptor_tid": 50,
       "waker_comm": "payment", "waker_tgid": 10, "waker_tid": 10, "runq_ns": 300_000_000,
       "displaced_comm": "batch-job", "displaced_tgid": 30, "displaced_tid": 33,
       "end_ts": 1_700_000_000_400_000_000, "displaced_since": 1_700_000_000_050_000_000}


def test_a_run_queue_wait_names_the_task_it_took_the_cpu_from():
    s = summary(ROW)
    assert "woken by payment 10/10" in s and "got CPU 1 from batch-job 30/33 after its 350.000 ms on it" in s, s
    assert "after its" not in summary({**ROW, "displaced_since": 0})     # not known (older kernel or store)


def test_a_renamed_worker_thread_is_shown_with_its_process():
    s = summary({**ROW, "displaced_comm": "risk-w2", "displaced_process": "risk-recalc", "waker_process": "payment"})
    assert "got CPU 1 from risk-w2 (risk-recalc) 30/33" in s and "woken by payment 10/10" in s, s


def test_rows_without_a_displaced_task_or_a_wait_say_nothing_of_it():
    assert "got CPU" not in summary({**ROW, "runq_ns": 0})
    old = {k: v for k, v in ROW.items() if not k.startswith("displaced_")}     # a store from an older kprobe
    assert "got CPU" not in summary(old) and "run-queue" in summary(old)


def test_a_block_sum_reads_as_many_requests_not_one():
    from kprobe.query.events import summary

    one = {"type": "block_io", "comm": "pg", "tgid": 7, "tid": 7, "rwbs": "W", "bytes": 8192, "dev": 8,
           "dur_ns": 300_000, "requests": 1, "busy_ns": 300_000, "max_ns": 300_000}
    assert "requests" not in summary(one) and "8192 B" in summary(one)
    summed = {**one, "requests": 120, "bytes": 983040, "busy_ns": 36_000_000, "max_ns": 900_000, "dur_ns": 990_000_000}
    assert "120 requests" in summary(summed) and "983040 B" in summary(summed)
