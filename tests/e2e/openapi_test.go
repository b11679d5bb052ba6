package e2e

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/tests/harness"
)

// TestOpenAPIAndPathHelpAreComplete reads the OpenAPI document the real
// Vault serves for the mount and `vault path-help` for every path: each
// operation of the engine is listed with every field it takes, each with a
// description, and each path has help text.
func TestOpenAPIAndPathHelpAreComplete(t *testing.T) {
	v := harness.StartVault(t)
	raw, err := v.Client.Logical().ReadRaw("sys/internal/specs/openapi")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Body.Close()
	var doc struct {
		OpenAPI string `json:"openapi"`
		Paths   map[string]struct {
			Description string     `json:"description"`
			Get         *openAPIOp `json:"get"`
			Post        *openAPIOp `json:"post"`
			Delete      *openAPIOp `json:"delete"`
		} `json:"paths"`
		Components struct {
			Schemas map[string]struct {
				Properties map[string]struct {
					Type        string `json:"type"`
					Description string `json:"description"`
				} `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.NewDecoder(raw.Body).Decode(&doc); err != nil {
		t.Fatalf("the OpenAPI document is not valid JSON: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi = %q, want 3.x", doc.OpenAPI)
	}

	// What docs/api.md documents, path by path: the methods and the
	// request fields of each.
	want := map[string]struct {
		methods []string
		fields  []string
	}{
		"/oauth/config": {[]string{"get", "post"}, []string{"redirect_uri", "refresh_skew", "tidy_interval", "upstream_timeout", "max_pending_authorizations"}},
		"/oauth/providers/{name}": {[]string{"get", "post", "delete"}, []string{
			"issuer", "token_url", "authorization_url", "revocation_url", "introspection_url", "device_authorization_url",
			"client_id", "client_secret", "client_auth", "client_private_key", "client_key_id", "scopes", "token_params",
			"revocation_cascades", "ca_pem", "timeout", "response_mode", "allowed_audiences", "preset", "tenant",
			"revocation_style", "auth_params", "default_token_ttl", "response_fields", "invalid_grant_errors",
			"scope_delimiter", "token_request_format", "rebind_grants"}},
		"/oauth/providers/": {[]string{"get"}, nil},
		"/oauth/grants/{name}": {[]string{"get", "post", "delete"}, []string{
			"provider", "refresh_token", "code", "redirect_uri", "code_verifier", "scopes", "max_age", "idle_timeout",
			"keep_alive", "owner_entity_id", "change_owner"}},
		"/oauth/grants/":                 {[]string{"get"}, nil},
		"/oauth/grants/{name}/authorize": {[]string{"post"}, []string{"provider", "scopes", "max_age", "idle_timeout", "keep_alive", "owner_entity_id"}},
		"/oauth/grants/{name}/device":    {[]string{"post"}, []string{"provider", "scopes", "max_age", "idle_timeout", "keep_alive", "owner_entity_id"}},
		"/oauth/callback":                {[]string{"get", "post"}, []string{"state", "code", "error", "error_description", "iss"}},
		"/oauth/roles/{name}": {[]string{"get", "post", "delete"}, []string{
			"grant_type", "grant", "provider", "scopes", "audience", "resource", "strict_scopes", "ttl", "max_ttl",
			"token_reuse", "min_remaining", "verify_on_renew"}},
		"/oauth/roles/":       {[]string{"get"}, nil},
		"/oauth/creds/{name}": {[]string{"get"}, nil},
		"/oauth/keys/rotate":  {[]string{"post"}, nil},
		"/oauth/tidy":         {[]string{"post"}, nil},
		"/oauth/tidy/status":  {[]string{"get"}, nil},
		"/oauth/metrics":      {[]string{"get"}, nil},
	}
	var problems []string
	for path, w := range want {
		p, ok := doc.Paths[path]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s: not in the OpenAPI document", path))
			continue
		}
		if strings.TrimSpace(p.Description) == "" {
			problems = append(problems, fmt.Sprintf("%s: no description", path))
		}
		ops := map[string]*openAPIOp{"get": p.Get, "post": p.Post, "delete": p.Delete}
		for _, m := range w.methods {
			op := ops[m]
			if op == nil {
				problems = append(problems, fmt.Sprintf("%s: no %s operation", path, m))
				continue
			}
			if op.OperationID == "" {
				problems = append(problems, fmt.Sprintf("%s %s: no operationId", path, m))
			}
		}
		if len(w.fields) == 0 {
			continue
		}
		if p.Post == nil || p.Post.RequestBody == nil {
			problems = append(problems, fmt.Sprintf("%s: no request body schema", path))
			continue
		}
		// Vault 1.21 serves an external plugin's request body with an
		// empty $ref; the schema itself is there, named after the
		// operationId ("oauth-write-role" → OauthWriteRoleRequest).
		ref := strings.TrimPrefix(p.Post.RequestBody.Content["application/json"].Schema.Ref, "#/components/schemas/")
		if ref == "" {
			ref = schemaName(p.Post.OperationID)
		}
		schema, ok := doc.Components.Schemas[ref]
		if !ok {
			b, _ := json.Marshal(p.Post.RequestBody)
			problems = append(problems, fmt.Sprintf("%s: request schema %q not found %s", path, ref, b))
			continue
		}
		for _, f := range w.fields {
			prop, ok := schema.Properties[f]
			switch {
			case !ok:
				problems = append(problems, fmt.Sprintf("%s: field %s missing", path, f))
			case strings.TrimSpace(prop.Description) == "":
				problems = append(problems, fmt.Sprintf("%s: field %s has no description", path, f))
			}
		}
	}

	// path-help, as an operator types it.
	for _, path := range []string{"oauth/config", "oauth/providers/p", "oauth/grants/g", "oauth/grants/g/authorize",
		"oauth/grants/g/device", "oauth/callback", "oauth/roles/r", "oauth/creds/r", "oauth/keys/rotate", "oauth/tidy", "oauth/tidy/status", "oauth/metrics"} {
		out, err := v.CLI(t, "path-help", path)
		if err != nil {
			problems = append(problems, fmt.Sprintf("vault path-help %s: %v", path, err))
			continue
		}
		if !strings.Contains(out, "## DESCRIPTION") || len(out) < 200 {
			problems = append(problems, fmt.Sprintf("vault path-help %s: thin help (%d bytes)", path, len(out)))
		}
	}
	sort.Strings(problems)
	for _, p := range problems {
		t.Error(p)
	}
	t.Logf("%d paths checked in the OpenAPI document, %d path-help pages", len(want), 12)
}

type openAPIOp struct {
	OperationID string `json:"operationId"`
	RequestBody *struct {
		Content map[string]struct {
			Schema struct {
				Ref string `json:"$ref"`
			} `json:"schema"`
		} `json:"content"`
	} `json:"requestBody"`
}

// schemaName is the component schema Vault names after an operationId.
func schemaName(operationID string) string {
	var b strings.Builder
	for _, part := range strings.Split(operationID, "-") {
		if part != "" {
			b.WriteString(strings.ToUpper(part[:1]) + part[1:])
		}
	}
	return b.String() + "Request"
}
