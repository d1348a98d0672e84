"""the pixel size of each image result, so a task chaining on one is judged at submit

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Tasks that finished before have no sizes: a task chaining on them is judged as
    # before (when it runs).
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("result_sizes", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("result_sizes")
