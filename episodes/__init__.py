"""Episodic few-shot learners with SLA."""
