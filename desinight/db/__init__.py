"""Task database: SQLAlchemy 2 models, engine factory, repository functions, migrations."""
