"""QEMU guest test harness: see README.md. Standard library only."""
