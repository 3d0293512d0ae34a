"""A real local Kubernetes cluster for tests and `make demo`, built from Go modules.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler run as local processes with
their own certificates and RBAC on; KWOK plays the kubelets of a few fake 8-GPU nodes; and a
real CPU node (`realnode`: kubelet, containerd with runc, the CNI bridge, kube-proxy, CoreDNS)
runs pods in containers on this machine. `python -m tests.localcluster up|down|status|env|logs`
drives it by hand (as root: the node changes host settings, which `down` restores).
"""
