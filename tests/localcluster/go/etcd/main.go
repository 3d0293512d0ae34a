// Command etcd is the etcd server, built from its published Go module
// (go.etcd.io/etcd/server/v3 uses local replaces, so `go install` cannot build it directly).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
