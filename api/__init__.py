"""`kprobe serve`: the read-only HTTP/JSON API and the web UI over the same store the CLI queries.

Every endpoint calls the functions the CLI calls (``kprobe.query``, ``kprobe.causal``); this
package only adds what HTTP needs: parameter validation, pagination, auth, the OpenAPI
document, and the timeline's per-zoom aggregation (which no CLI command has).

``prometheus.py`` is kprobe's other read-only HTTP endpoint: ``GET /metrics`` of the long-running
scale-out processes (the Kafka agent, the dataflows), standalone (it imports nothing else of api/).
"""
