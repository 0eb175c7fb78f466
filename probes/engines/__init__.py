"""Engines we did not write: found by their processes, watched, and scraped through their Prometheus endpoints."""
