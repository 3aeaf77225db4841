"""Warm backends: produce a cache for a kernel set or a model (see issue "Warm a cache")."""
