"""`kprobe demo`: the payment incident end to end, with real processes on the real kernel.

The workloads (payment_handler, settlement_svc, batch_job) are generic and parametrised (names,
ports, timings, load) so tests reuse them for other scenarios; scenario.py runs them under a
recording session and explains the failed payment.
"""
