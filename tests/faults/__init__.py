"""Fault injection against every runner with a real backend here (issue 8, item 2)."""
