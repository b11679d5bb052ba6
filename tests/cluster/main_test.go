// Package cluster holds the failover tests: a real three-node Vault 1.21.0
// cluster with integrated storage (Raft), not dev mode, running the real
// plugin binary from its catalog, against the real test upstream
// (tests/upstream, node-oidc-provider). The processes are run by package
// tests/harness (StartCluster); see its documentation for the environment
// variables it reads.
//
// Every test logs its failover figures on lines starting with FAILOVER,
// e.g. `FAILOVER scenario=stepdown-shared window=1.2s burned=0/1`:
//
//	go test -count=1 -v ./tests/cluster/ | grep FAILOVER
package cluster

import (
	"os"
	"testing"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/tests/harness"
)

func TestMain(m *testing.M) {
	os.Exit(harness.RunTests(m))
}
