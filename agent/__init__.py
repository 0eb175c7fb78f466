"""gpusleuth.agent"""
