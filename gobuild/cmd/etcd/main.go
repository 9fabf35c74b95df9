// Command etcd is etcd's server at the version the pinned Kubernetes release uses,
// built here because a Go module cannot `go install` another module's root package.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
