"""trainkube on kind: a kind cluster (a control plane and two CPU workers) made from
kind-config.yaml, the project's images loaded into it, the Helm chart installed, and the
pre-train -> LoRA -> A/B chain run across the two workers (`make kind-demo`, `make kind-down`).

Where a registry is reachable (Docker) it uses kind's published node image; here, with podman
and no registry, a node image built by tests/kind/build-node-image.sh, a small pod network
configured from the host, and a folder of this machine shared by every node for the claims.
"""
