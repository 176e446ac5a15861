"""The reports service's MongoDB collections and indexes: none of its own yet.

Its consumer's `inbox` and any outbox belong to the shared plumbing, which indexes them.
"""
