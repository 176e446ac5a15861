"""Avis intake service."""
