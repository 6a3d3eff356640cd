"""Fuzzers that drive a real nvmefs mount (make fuzz)."""
