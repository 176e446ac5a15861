"""Avis shared contracts and plumbing."""
