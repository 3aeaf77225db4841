"""OCI images: build, store, transfer and inspect Triton cache images."""
