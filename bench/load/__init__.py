"""Helpers of bench/load_bench.py (stamped fake provider, platform launcher, clients, report)."""
