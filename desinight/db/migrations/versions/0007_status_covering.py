"""status_covering: the per-night and per-kind counts of `status` and `campaign status` read
from covering indexes (issue 18 item 5): job (production_id, night, state) and
(production_id, state, kind), exposure (production_id, night, obstype) replace the
(production_id, night) and (production_id, state) indexes they extend, so a campaign's
inserts maintain no more indexes than before.

Revision ID: 0007_status_covering
Revises: 0006_calib_cameras
Create Date: 2026-11-30
"""
from alembic import op


revision = '0007_status_covering'
down_revision = '0006_calib_cameras'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_job_prod_night_state', 'job', ['production_id', 'night', 'state'])
    op.create_index('ix_job_prod_state_kind', 'job', ['production_id', 'state', 'kind'])
    op.create_index('ix_exposure_prod_night_obstype', 'exposure',
                    ['production_id', 'night', 'obstype'])
    op.drop_index('ix_job_prod_night', table_name='job')
    op.drop_index('ix_job_prod_state', table_name='job')
    op.drop_index('ix_exposure_prod_night', table_name='exposure')


def downgrade() -> None:
    op.create_index('ix_job_prod_night', 'job', ['production_id', 'night'])
    op.create_index('ix_job_prod_state', 'job', ['production_id', 'state'])
    op.create_index('ix_exposure_prod_night', 'exposure', ['production_id', 'night'])
    op.drop_index('ix_job_prod_night_state', table_name='job')
    op.drop_index('ix_job_prod_state_kind', table_name='job')
    op.drop_index('ix_exposure_prod_night_obstype', table_name='exposure')
