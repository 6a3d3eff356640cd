"""Sans-IO NVMe: commands, completions, status, data structures and renderers.

Standard library only, no I/O (tests/unit/test_sans_io.py enforces it).
"""
