"""incidents: one per Alertmanager alert group, deduplicated across replicas by open_key

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from opsbot.store import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("group_key", sa.Text(), nullable=False),
        sa.Column("group_hash", sa.String(64), nullable=False, index=True),
        # the group key's hash while the incident is open, NULL once resolved: unique, so two
        # replicas receiving the same group's first delivery insert one incident
        sa.Column("open_key", sa.String(64), nullable=True, unique=True),
        sa.Column("receiver", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("annotations", sa.JSON(), nullable=False),
        sa.Column("alerts", sa.JSON(), nullable=False),
        sa.Column("external_url", sa.String(500), nullable=False),
        sa.Column("channel", sa.String(200), nullable=False),
        sa.Column("thread", sa.String(200), nullable=False),
        sa.Column("root", sa.String(200), nullable=False),
        sa.Column("acked_by", sa.String(200), nullable=True),
        sa.Column("acked_at", UTCDateTime(), nullable=True),
        sa.Column("opened_at", UTCDateTime(), nullable=False, index=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("resolved_at", UTCDateTime(), nullable=True),
        sa.Column("claimed_at", UTCDateTime(), nullable=False),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("incidents")
