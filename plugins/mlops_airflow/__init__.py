"""Airflow extensions of this project: hooks, operators and operator extra links.

Importable because Airflow puts the plugins folder on sys.path; `.airflowignore` keeps the plugin manager
from loading these modules one file at a time.
"""
