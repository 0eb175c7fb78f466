"""gpusleuth.tui"""
