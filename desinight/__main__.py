"""``python -m desinight``: what job scripts call, so they use the exact interpreter that rendered them."""

from .cli.main import main

main()
