"""calib_cameras: a per-camera choice of calibrations (issue 15, `calib use --cameras`) and
the per-camera calibration nights a job was planned with

Revision ID: 0006_calib_cameras
Revises: 0005
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa


revision = '0006_calib_cameras'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('calib_camera_choice',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('production_id', sa.Integer(), nullable=False),
    sa.Column('night', sa.Integer(), nullable=False),
    sa.Column('camera', sa.String(length=8), nullable=False),
    sa.Column('ref_night', sa.Integer(), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['production_id'], ['production.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('production_id', 'night', 'camera')
    )
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('calib_nights', sa.String(length=512), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_column('calib_nights')
    op.drop_table('calib_camera_choice')
