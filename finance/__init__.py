"""Finance: what kprobe's spans and kernel rows mean to a payments or trading business.

Why its own package (installed as ``kprobe.finance``): the protocols say *what was said*; this
says *what it was* (a payment received, a settlement instruction, an order acknowledged), which
key follows it across services (payment id, UETR, ClOrdID), and which settlement window it races.
Plain Python over span rows and dates, no database: the CLI (``kprobe timeline``, ``kprobe why
--payment``, ``kprobe latency``) and tests call the same functions.

* :mod:`.calendars` - business-day calendars by rule (Federal Reserve, England and Wales, TARGET, CLS);
* :mod:`.windows` - cut-off windows with presets (Fedwire, CHAPS, T2, CLS, Same Day ACH) and slack;
* :mod:`.domain` - the domain map YAML: validated, then used to classify spans into business events;
* :mod:`.timeline` - a business key's events in order, with gaps, windows and the kernel root cause.
"""
