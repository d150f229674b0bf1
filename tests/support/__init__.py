"""Test-only helpers shared by the unit tests (never imported by pyapp itself)."""
