"""trainkube's tests: unit (no cluster) and cluster (the real local control plane)."""
