"""OTLP trace intake: request spans of engines we did not write (vLLM) as request phases."""
