"""Why was this request slow: request phases, evidence, verdicts."""
