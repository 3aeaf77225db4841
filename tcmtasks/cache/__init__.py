"""Reading and changing a Triton cache on disk."""
