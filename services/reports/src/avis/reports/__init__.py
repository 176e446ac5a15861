"""Avis reports service."""
