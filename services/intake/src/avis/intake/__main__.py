"""`python -m avis.intake`."""

from avis.intake.main import run

run()
