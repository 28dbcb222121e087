"""several replicas: approvals record who runs them (executing, unknown), follow-ups the
leader runs and resumes, the inventory the leader gathers

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from opsbot.store import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.add_column(sa.Column("started_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("executor", sa.String(200), nullable=False, server_default=""))
    op.create_table(
        "follow_ups",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("skill", sa.String(100), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("actor", sa.JSON(), nullable=False),
        sa.Column("channel", sa.String(200), nullable=False),
        sa.Column("thread", sa.String(200), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("approval_id", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("runner", sa.String(200), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("deadline", UTCDateTime(), nullable=False),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=True),
        sa.Column("result", sa.Text(), nullable=False),
    )
    op.create_table(
        "inventory",
        sa.Column("kind", sa.String(200), primary_key=True),
        sa.Column("names", sa.JSON(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("inventory")
    op.drop_table("follow_ups")
    with op.batch_alter_table("approvals") as batch:
        batch.drop_column("executor")
        batch.drop_column("started_at")
