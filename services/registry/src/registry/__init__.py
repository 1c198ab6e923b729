"""Rescind registry: licensees, licenses backed by consent, model lineage and the holders lookup."""
