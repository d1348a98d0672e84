"""Prometheus metrics, served at /metrics (and by `imagine worker --metrics-port`).
Counters only move; dashboards take rates. docs/design.md lists them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

UPSTREAM_CALLS = Counter(
    "imagine_upstream_calls_total",
    "Calls made to upstream providers.",
    ["provider", "operation", "outcome"],
)
OPERATOR_ERRORS = Counter(
    "imagine_provider_operator_errors_total",
    "Upstream answers only the operator can fix (credentials, upstream balance).",
    ["provider"],
)
TASKS_FINISHED = Counter(
    "imagine_tasks_finished_total", "Tasks that ended, by status.", ["provider", "status"]
)
FAILOVERS = Counter(
    "imagine_failovers_total", "Tasks moved to their next route.", ["from_provider", "to_provider"]
)
CALLBACKS = Counter(
    "imagine_upstream_callbacks_total", "Upstream callbacks received.", ["provider", "outcome"]
)
DATABASE_CONNECTIONS_OPENED = Counter(
    "imagine_database_connections_opened_total",
    "PostgreSQL connections this process opened (its pool reuses them).",
)
TASK_DURATION = Histogram(
    "imagine_task_duration_seconds",
    "Seconds from a task's creation to its end, for the tasks a worker ended.",
    ["model", "provider"],
    buckets=(1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600),
)
UPSTREAM_CALL_SECONDS = Histogram(
    "imagine_upstream_call_seconds",
    "Seconds one upstream call took (after its budget and a connection slot allowed it).",
    ["provider", "operation"],
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
WEBHOOK_DELIVERIES = Counter(
    "imagine_webhook_deliveries_total",
    "Webhook delivery attempts, by what became of the delivery.",
    ["outcome"],
)
"""outcome: delivered, retry (another attempt is scheduled), failed (no more), gone (410)."""


@dataclass(frozen=True, slots=True)
class QueueState:
    due_tasks: int
    oldest_due_seconds: float
    webhook_backlog: int


class QueueGauges(Collector):
    """Gauges read from the database. A host refreshes `state` right before it renders a
    scrape (services/health.py `refresh_queue_gauges`); until the first refresh, and
    after a failed one, the gauges are left out rather than shown stale."""

    def __init__(self) -> None:
        self.state: QueueState | None = None

    def collect(self) -> Iterator[Metric]:
        state = self.state
        if state is None:
            return
        yield GaugeMetricFamily(
            "imagine_tasks_due", "Unfinished tasks due now, waiting for a worker.", state.due_tasks
        )
        yield GaugeMetricFamily(
            "imagine_oldest_due_task_seconds",
            "How long the longest-waiting due task has been due (0: none).",
            state.oldest_due_seconds,
        )
        yield GaugeMetricFamily(
            "imagine_webhook_backlog",
            "Webhook deliveries due now, waiting for a sender.",
            state.webhook_backlog,
        )


QUEUE = QueueGauges()
REGISTRY.register(QUEUE)
