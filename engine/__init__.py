"""gpusleuth.engine: the bundled Llama-family inference engine.

Tensor parallel over NCCL (gloo on CPU), paged KV cache, continuous batching with chunked prefill, an
OpenAI-compatible server, and spans + NVTX ranges for the agent. Entry point: `python -m gpusleuth.engine`.
"""
