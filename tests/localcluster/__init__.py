"""A real local Kubernetes control plane for tests and `make demo`, built from Go modules.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler run as local processes on
127.0.0.1 with their own certificates and RBAC on; KWOK plays the kubelets of a few fake
8-GPU nodes. `python -m tests.localcluster up|down|status` drives it by hand.
"""
