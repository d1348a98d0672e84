"""admin lists: newest-first indexes over every account's tasks, deliveries and accounts

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEXES = {
    "ix_tasks_created": "tasks",
    "ix_webhook_deliveries_created": "webhook_deliveries",
    "ix_accounts_created": "accounts",
}


def upgrade() -> None:
    for name, table in _INDEXES.items():
        op.create_index(name, table, ["created_at", "id"])


def downgrade() -> None:
    for name, table in _INDEXES.items():
        op.drop_index(name, table_name=table)
