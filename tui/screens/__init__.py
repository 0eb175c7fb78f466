"""gpusleuth.tui.screens"""
