"""gpusleuth.probes"""
