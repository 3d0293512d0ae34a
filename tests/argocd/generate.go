package argocd

//go:generate go run ./cmd/generate
