"""Test-time corruptions (attacks) and the runner that evaluates trained runs under them."""
