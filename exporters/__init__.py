"""gpusleuth.exporters"""
