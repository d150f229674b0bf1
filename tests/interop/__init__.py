"""Interop: pages against aiortc (a standard peer, and a relaying man in the middle)."""
