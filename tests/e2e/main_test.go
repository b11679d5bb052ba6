// Package e2e holds the end-to-end tests: a real Vault 1.21.0 server (dev
// mode) running the real plugin binary, talking to a real OAuth 2.0 / OIDC
// authorization server (tests/upstream, node-oidc-provider). The processes
// are run by package tests/harness; see its documentation for the
// environment variables it reads.
package e2e

import (
	"fmt"
	"os"
	"testing"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/tests/harness"
)

func TestMain(m *testing.M) {
	os.Exit(runTestMain(m))
}

func runTestMain(m *testing.M) int {
	cleanup, err := harness.Setup()
	defer cleanup()
	if err != nil {
		// A missing vault, node or plugin is a failure, never a skip.
		fmt.Fprintf(os.Stderr, "e2e: setup failed: %v\n", err)
		fmt.Println("FAIL: e2e harness setup")
		return 1
	}
	return m.Run()
}
