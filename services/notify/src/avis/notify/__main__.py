"""`python -m avis.notify`."""

from avis.notify.main import run

run()
