"""revocation-worker's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DELIVERY_ATTEMPTS = Counter(
    "rescind_webhook_attempts_total", "Webhook delivery attempts by outcome", ["outcome"]
)
DELIVERY_LATENCY = Histogram(
    "rescind_webhook_attempt_duration_seconds",
    "Duration of one webhook POST",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
REVOCATION_TO_DELIVERY = Histogram(
    "rescind_revocation_to_delivery_seconds",
    "From the revocation's commit to the first verified-deliverable webhook (2xx) of its notice",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600, 86400),
)
NOTICES = Gauge("rescind_notices", "Notices by status", ["status"])
DEAD_LETTER_DEPTH = Gauge("rescind_webhook_dead_letter_depth", "Deliveries that exhausted their retry window")
ENDPOINTS_DISABLED = Counter("rescind_endpoints_disabled_total", "Endpoints disabled", ["reason"])
REVOCATIONS_RESOLVED = Counter("rescind_revocations_resolved_total", "Revocations turned into notices")
LATE_NOTICES = Counter(
    "rescind_late_notices_total",
    "Notices made after their revocation was resolved, for licensees the registry reported later "
    "(licenses recorded while its projection lagged behind the revocation)",
)

# Every series from the start: increase()/rate() miss the first event of a series born at 1.
for _reason in ("gone", "failing"):
    ENDPOINTS_DISABLED.labels(_reason)
for _outcome in ("success", "http_4xx", "http_5xx", "timeout", "error"):
    DELIVERY_ATTEMPTS.labels(_outcome)
