"""Avis notify service."""
