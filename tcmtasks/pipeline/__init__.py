"""Pipelines: YAML recipes compiled into incremental doit tasks (see dodo.py)."""
