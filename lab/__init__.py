"""Experiment tooling run from a checkout (not installed): the GPU call, throughput tables, the budget curve, and the
grid files of docs/results.md. Run as ``python -m lab.<tool>`` from the checkout's root."""
