"""Avis web pages."""
