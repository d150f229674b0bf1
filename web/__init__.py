"""pyapp's page shell and its signaling/dev server (CPython side, not in the wheel)."""
