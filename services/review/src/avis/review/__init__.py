"""Avis review service."""
