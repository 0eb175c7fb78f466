"""gpusleuth.tui.widgets"""
