"""The PromQL selector parsing the monitoring checks rely on."""

from __future__ import annotations

from support.k8s import (
    metric_refs,
)


def test_promql_parsing() -> None:
    refs = metric_refs(
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="1", y!="2"}[5m]))) / sum(b) > 0.5 and on(z) c'
    )
    assert refs == [("a_bucket", [("x", "=", "1"), ("y", "!=", "2")]), ("b", []), ("c", [])]
