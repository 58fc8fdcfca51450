"""Reports of finished runs: plots and an HTML page.
"""
