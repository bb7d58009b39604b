"""Temporal workflows and the deterministic logic they run (scheduling, retries)."""
