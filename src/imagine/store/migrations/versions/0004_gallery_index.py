"""gallery: an index for public finished tasks, newest first

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_tasks_gallery", "tasks", ["public", "status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_tasks_gallery", table_name="tasks")
