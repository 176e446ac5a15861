"""`python -m avis.web`."""

from avis.web.main import run

run()
