"""Helpers shared by the test suites (imported explicitly: `from support.helpers import register`)."""
