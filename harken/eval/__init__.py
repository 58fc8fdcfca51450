"""Evaluation: benchmark runs, the benchmarks' scoring rule, result files, tables and charts.
"""
