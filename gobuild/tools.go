//go:build tools

// Package gobuild pins the Kubernetes release whose binaries the suite runs as real
// peers. This file only names the commands so that `go mod tidy` records their
// dependencies; harness/kubebins.py builds them with `go build`.
package gobuild

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
