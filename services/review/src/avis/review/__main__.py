"""`python -m avis.review`."""

from avis.review.main import run

run()
