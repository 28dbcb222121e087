"""ids of chat events already handled (deduplication across retries and replicas)

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from opsbot.store import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "seen_events",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("at", UTCDateTime(), nullable=False, index=True),
    )


def downgrade() -> None:
    op.drop_table("seen_events")
