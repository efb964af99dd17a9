"""Long-tailed classification with SLA."""
