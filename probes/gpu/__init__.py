"""GPU probe: NVML sampling, GPM, MIG, processes, XIDs."""
