package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/tests/harness"
)

// TestPrivateKeyJWTClient authenticates the engine to the real upstream
// with private_key_jwt (RFC 7523): issue, introspect and revoke, and the
// private key never shows in a response or a log.
func TestPrivateKeyJWTClient(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := key.PublicKey.ECDH()
	if err != nil {
		t.Fatal(err)
	}
	point := pub.Bytes() // 0x04 || X || Y
	b64 := base64.RawURLEncoding.EncodeToString
	jwks, _ := json.Marshal(map[string]any{"keys": []any{map[string]string{
		"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": "vault-test",
		"x": b64(point[1:33]), "y": b64(point[33:]),
	}}})
	e := startEngine(t, harness.UpstreamOptions{Env: []string{"CLIENT_JWKS=" + string(jwks)}})

	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pemText := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if _, err := e.v.CLIWithStdin(t, pemText, "write", "oauth/providers/jwt", "issuer="+e.up.URL,
		"client_id=vault-jwt", "client_auth=private_key_jwt", "client_key_id=vault-test", "client_private_key=-"); err != nil {
		t.Fatalf("provider with private_key_jwt: %v", err)
	}
	e.v.MustCLI(t, "write", "oauth/roles/jwt", "grant_type=client_credentials", "provider=jwt", "scopes=api:read")

	c := e.cliCreds(t, "jwt")
	token := c["access_token"].(string)
	info := e.up.Introspect(t, token)
	if info["active"] != true || info["client_id"] != "vault-jwt" || info["scope"] != "api:read" {
		t.Fatalf("upstream introspection = %v", info)
	}
	// Revocation authenticates the same way.
	e.v.MustCLI(t, "lease", "revoke", "-sync", c["lease_id"].(string))
	if info := e.up.Introspect(t, token); info["active"] != false {
		t.Fatalf("token active after revocation: %v", info)
	}

	// Negative control: the same client with a key the upstream does not
	// know is refused as a client error (502), not as a grant problem.
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherDER, _ := x509.MarshalPKCS8PrivateKey(other)
	otherPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: otherDER}))
	if _, err := e.v.CLIWithStdin(t, otherPEM, "write", "oauth/providers/wrongkey", "issuer="+e.up.URL,
		"client_id=vault-jwt", "client_auth=private_key_jwt", "client_key_id=vault-test", "client_private_key=-"); err != nil {
		t.Fatal(err)
	}
	e.v.MustCLI(t, "write", "oauth/roles/wrongkey", "grant_type=client_credentials", "provider=wrongkey")
	if _, err := e.creds("wrongkey"); err == nil || !strings.Contains(err.Error(), "502") || !strings.Contains(err.Error(), "client settings") {
		t.Fatalf("a wrong signing key: %v", err)
	}

	out := e.v.MustCLI(t, "read", "-format=json", "oauth/providers/jwt")
	if !strings.Contains(out, `"client_private_key_set": true`) {
		t.Fatalf("provider read = %s", out)
	}
	// Every base64 line of the PEM body is a piece of the private key.
	secrets := map[string]string{}
	for i, line := range strings.Split(strings.TrimSpace(pemText), "\n") {
		if !strings.HasPrefix(line, "-----") {
			secrets["private key line "+string(rune('1'+i))] = line
			if strings.Contains(out, line) {
				t.Fatalf("provider read shows the private key")
			}
		}
	}
	harness.AssertNoNamedSecretsInLogs(t, e.v, secrets)
}
