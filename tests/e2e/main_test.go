// Package e2e holds the end-to-end tests: a real Vault 1.21.0 server (dev
// mode) running the real plugin binary, talking to a real OAuth 2.0 / OIDC
// authorization server (tests/upstream, node-oidc-provider). The processes
// are run by package tests/harness; see its documentation for the
// environment variables it reads.
package e2e

import (
	"os"
	"testing"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/tests/harness"
)

func TestMain(m *testing.M) {
	os.Exit(harness.RunTests(m))
}
