"""how far an unfinished task has got, where its provider says so

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("progress", sa.SmallInteger(), nullable=True))
        batch.create_check_constraint(
            op.f("ck_tasks_progress_percent"), "progress BETWEEN 0 AND 100"
        )


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_constraint(op.f("ck_tasks_progress_percent"), type_="check")
        batch.drop_column("progress")
