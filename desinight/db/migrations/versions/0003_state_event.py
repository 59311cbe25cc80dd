"""state_event: one row per job-state or exposure-status move (issue 14)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('state_event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('production_id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.Column('exposure_id', sa.Integer(), nullable=True),
    sa.Column('attempt', sa.Integer(), nullable=True),
    sa.Column('from_state', sa.String(length=16), nullable=False),
    sa.Column('to_state', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('host', sa.String(length=128), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['production_id'], ['production.id'], ),
    sa.ForeignKeyConstraint(['job_id'], ['job.id'], ),
    sa.ForeignKeyConstraint(['exposure_id'], ['exposure.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('state_event', schema=None) as batch_op:
        batch_op.create_index('ix_state_event_job', ['job_id'], unique=False)
        batch_op.create_index('ix_state_event_exposure', ['exposure_id'], unique=False)
        batch_op.create_index('ix_state_event_prod_at', ['production_id', 'at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('state_event', schema=None) as batch_op:
        batch_op.drop_index('ix_state_event_prod_at')
        batch_op.drop_index('ix_state_event_exposure')
        batch_op.drop_index('ix_state_event_job')
    op.drop_table('state_event')
