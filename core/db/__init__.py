"""Relational state of the service: tenants, keys, jobs, events, checkpoints and artifacts."""
