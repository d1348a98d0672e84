"""Prometheus metrics, served at /metrics. Counters only move; dashboards take rates."""

from __future__ import annotations

from prometheus_client import Counter

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
