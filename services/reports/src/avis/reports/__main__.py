"""`python -m avis.reports`."""

from avis.reports.main import run

run()
