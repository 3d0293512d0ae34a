// Command generate writes the files generated from charts/trainkube/argocd/health.source.lua:
// each kind's health.lua, argocd-cm-patch.yaml and the README's argocd-cm snippet. Run it with
// `go generate` in tests/argocd (a test fails while they differ from what it would write).
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"trainkube.local/argocd"
)

func main() {
	files, err := argocd.Generate()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	paths := make([]string, 0, len(files))
	for path := range files {
		paths = append(paths, path)
	}
	sort.Strings(paths)
	for _, path := range paths {
		if old, err := os.ReadFile(path); err == nil && string(old) == string(files[path]) {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if err := os.WriteFile(path, files[path], 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println("wrote", path)
	}
}
