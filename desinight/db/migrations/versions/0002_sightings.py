"""sighting: raw directories seen but not ingested

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('sighting',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('production_id', sa.Integer(), nullable=False),
    sa.Column('night', sa.Integer(), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('first_seen', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['production_id'], ['production.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('production_id', 'path')
    )
    with op.batch_alter_table('sighting', schema=None) as batch_op:
        batch_op.create_index('ix_sighting_prod_night', ['production_id', 'night'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('sighting', schema=None) as batch_op:
        batch_op.drop_index('ix_sighting_prod_night')
    op.drop_table('sighting')
