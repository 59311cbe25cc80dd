"""calib_choice: an operator's choice of a night's calibrations (issue 15, `calib use`)

Revision ID: 0005
Revises: 0004_exposure_edits
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004_exposure_edits'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('calib_choice',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('production_id', sa.Integer(), nullable=False),
    sa.Column('night', sa.Integer(), nullable=False),
    sa.Column('ref_night', sa.Integer(), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['production_id'], ['production.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('production_id', 'night')
    )


def downgrade() -> None:
    op.drop_table('calib_choice')
