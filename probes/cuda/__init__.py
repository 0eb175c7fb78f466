"""CUDA, NCCL and gloo uprobes: what any engine does with the GPU (probe.py)."""
