"""exposure edits: LASTSTEP, bad amplifiers, flags on the exposure; one row per operator edit
(issue 15)

Revision ID: 0004_exposure_edits
Revises: 0003
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa


revision = '0004_exposure_edits'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('exposure', schema=None) as batch_op:
        batch_op.add_column(sa.Column('laststep', sa.String(length=16), nullable=False,
                                      server_default='all'))
        batch_op.add_column(sa.Column('laststep_reason', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('bad_amps', sa.String(length=512), nullable=False,
                                      server_default=''))
        batch_op.add_column(sa.Column('flags', sa.String(length=128), nullable=False,
                                      server_default=''))
    op.create_table('exposure_edit',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('production_id', sa.Integer(), nullable=False),
    sa.Column('exposure_id', sa.Integer(), nullable=False),
    sa.Column('changes', sa.JSON(), nullable=False),
    sa.Column('effects', sa.JSON(), nullable=False),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['production_id'], ['production.id'], ),
    sa.ForeignKeyConstraint(['exposure_id'], ['exposure.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('exposure_edit', schema=None) as batch_op:
        batch_op.create_index('ix_exposure_edit_exposure', ['exposure_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('exposure_edit', schema=None) as batch_op:
        batch_op.drop_index('ix_exposure_edit_exposure')
    op.drop_table('exposure_edit')
    with op.batch_alter_table('exposure', schema=None) as batch_op:
        batch_op.drop_column('flags')
        batch_op.drop_column('bad_amps')
        batch_op.drop_column('laststep_reason')
        batch_op.drop_column('laststep')
