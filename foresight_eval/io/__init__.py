"""Readers: everything that touches user files (clips, frame folders, arrays) and writes run files."""
