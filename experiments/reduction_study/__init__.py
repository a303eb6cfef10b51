"""The two-axis reduction study (run.py, recipe.py, report.py; README.md)."""
