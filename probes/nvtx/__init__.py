"""NVTX from any process: an NVTX injection library (C) that sends ranges to the agent, its build, its intake."""
