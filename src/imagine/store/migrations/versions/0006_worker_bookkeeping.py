"""the worker's bookkeeping in its own columns, apart from the provider's state

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_tasks = sa.table(
    "tasks",
    sa.column("id", sa.String),
    sa.column("status", sa.String),
    # None must be SQL NULL, not the JSON text 'null' (see store/schema.py).
    sa.column("provider_state", sa.JSON(none_as_null=True)),
    sa.column("routes_tried", sa.JSON(none_as_null=True)),
    sa.column("results_to_copy", sa.JSON(none_as_null=True)),
)
TRIED = "_tried"
MIRRORING = "_mirroring"
"""The provider_state keys earlier versions kept this bookkeeping under."""


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("routes_tried", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("results_to_copy", sa.JSON(), nullable=True))
    connection = op.get_bind()
    # Earlier versions cleared JSON columns to the JSON text 'null' on PostgreSQL, which
    # `IS NULL` does not match (a read callback looked like a waiting one): make it NULL.
    for column in ("provider_state", "result_urls", "upstream_callback"):
        connection.execute(
            sa.text(f"UPDATE tasks SET {column} = NULL WHERE CAST({column} AS TEXT) = 'null'")
        )
    # Tasks in flight keep their bookkeeping: moved out of the provider's state.
    unfinished = connection.execute(
        sa.select(_tasks.c.id, _tasks.c.provider_state).where(
            _tasks.c.status == "IN_PROGRESS", _tasks.c.provider_state.is_not(None)
        )
    )
    for task_id, state in list(unfinished):
        if not isinstance(state, dict) or not (TRIED in state or MIRRORING in state):
            continue
        kept: dict[str, Any] = {k: v for k, v in state.items() if k not in (TRIED, MIRRORING)}
        connection.execute(
            sa.update(_tasks)
            .where(_tasks.c.id == task_id)
            .values(
                provider_state=kept or None,
                routes_tried=state.get(TRIED),
                results_to_copy=state.get(MIRRORING),
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("results_to_copy")
        batch.drop_column("routes_tried")
