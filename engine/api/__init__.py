"""The engine's OpenAI-compatible HTTP API on FastAPI: request and response models, validation into engine
parameters, chat templates, streaming, errors and the guards against slow or oversized clients (server.py runs it
under uvicorn)."""
