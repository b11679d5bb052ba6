package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/tests/harness"
)

// TestGrantInventory asks the real Vault where the refresh tokens are and
// who owns them: `vault list -detailed` key_info, and LIST filters sent as
// query parameters (?list=true&status=...), as the HTTP API takes them.
func TestGrantInventory(t *testing.T) {
	v := harness.StartVault(t)
	up := harness.StartUpstream(t, harness.UpstreamOptions{})
	v.MustCLI(t, "write", "oauth/config", "upstream_timeout=5s")
	v.MustCLI(t, "write", "oauth/providers/local", "issuer="+up.URL, "client_id="+up.ClientID, "client_secret="+up.ClientSecret)
	tokenURL := up.Endpoint(t, "token_endpoint")
	v.MustCLI(t, "write", "oauth/providers/other", "token_url="+tokenURL, "client_id=c", "client_secret=s")
	out := v.MustCLI(t, "write", "-format=json", "identity/entity", "name=alice")
	var entity struct {
		Data struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &entity); err != nil || entity.Data.ID == "" {
		t.Fatalf("entity: %v %s", err, out)
	}
	alice := entity.Data.ID

	rt, _ := up.Mint(t, up.ClientID, "offline_access api:read", "alice")
	mustCLIStdin(t, v, rt, "write", "oauth/grants/alices", "provider=local", "refresh_token=-", "owner_entity_id="+alice, "max_age=24h")
	mustCLIStdin(t, v, "never-issued", "write", "oauth/grants/refused", "provider=local", "refresh_token=-")
	mustCLIStdin(t, v, "rt-elsewhere", "write", "oauth/grants/elsewhere", "provider=other", "refresh_token=-")
	v.MustCLI(t, "write", "oauth/roles/alices", "grant=alices")
	v.MustCLI(t, "write", "oauth/roles/refused", "grant=refused")
	if _, err := v.Client.Logical().Read("oauth/creds/refused"); httpStatus(err) != http.StatusBadRequest {
		t.Fatalf("creds of a refused grant: %v", err)
	}
	if _, err := v.Client.Logical().Read("oauth/creds/alices"); err != nil {
		t.Fatal(err)
	}

	// vault list -detailed: the inventory columns. The use just now is
	// within the hour, so the index still holds the import's last_used_at
	// and lease count; a change of expiry writes the index with both.
	ki := detailedKeyInfo(t, v)["alices"]
	if ki["owner_entity_id"] != alice || ki["provider"] != "local" || ki["status"] != "active" || ki["active_leases"] != float64(0) ||
		!recent(ki["last_used_at"]) || !nonEmpty(ki["expires_at"]) {
		t.Errorf("key_info of alices = %v", ki)
	}
	v.MustCLI(t, "write", "oauth/grants/alices", "max_age=48h")
	grant, err := v.Client.Logical().Read("oauth/grants/alices")
	if err != nil {
		t.Fatal(err)
	}
	ki = detailedKeyInfo(t, v)["alices"]
	if ki["active_leases"] != float64(1) || ki["expires_at"] != grant.Data["expires_at"] || ki["last_used_at"] != grant.Data["last_used_at"] {
		t.Errorf("key_info of alices after a change of max_age = %v, want the grant's %v", ki, grant.Data)
	}
	table := v.MustCLI(t, "list", "-detailed", "oauth/grants")
	for _, column := range []string{"owner_entity_id", "last_used_at", "expires_at", "active_leases"} {
		if !strings.Contains(table, column) {
			t.Errorf("vault list -detailed shows no %s column:\n%s", column, table)
		}
	}

	// Filters, as query parameters of a LIST.
	for _, tc := range []struct {
		query url.Values
		want  []string
	}{
		{url.Values{"status": {"invalid"}}, []string{"refused"}},
		{url.Values{"status": {"active"}}, []string{"alices", "elsewhere"}},
		{url.Values{"provider": {"other"}}, []string{"elsewhere"}},
		{url.Values{"owner_entity_id": {alice}}, []string{"alices"}},
		{url.Values{"owner_entity_id": {alice}, "status": {"invalid"}}, nil},
		{url.Values{"unused_for": {"1h"}}, nil},
		{url.Values{"unused_for": {"0"}}, []string{"alices", "elsewhere", "refused"}},
	} {
		status, keys := listGrants(t, v, tc.query)
		if status != http.StatusOK && !(status == http.StatusNotFound && tc.want == nil) {
			t.Errorf("LIST grants?%s: HTTP %d", tc.query.Encode(), status)
			continue
		}
		if !slices.Equal(keys, tc.want) {
			t.Errorf("LIST grants?%s = %v, want %v", tc.query.Encode(), keys, tc.want)
		}
	}
	for _, bad := range []struct{ field, value string }{{"status", "revoked"}, {"unused_for", "soon"}, {"unused_for", "-1h"}} {
		query := url.Values{bad.field: {bad.value}}
		status, body := listGrantsRaw(t, v, http.MethodGet, query, "")
		if status != http.StatusBadRequest || !strings.Contains(body, bad.field) {
			t.Errorf("LIST grants?%s: HTTP %d %s, want a 400 naming %s", query.Encode(), status, body, bad.field)
		}
	}

	// The other forms: the LIST method takes the same query; a body on
	// LIST is ignored, and the CLI's list takes no parameters.
	if status, body := listGrantsRaw(t, v, "LIST", url.Values{"owner_entity_id": {alice}}, ""); status != http.StatusOK || !strings.Contains(body, `"keys":["alices"]`) {
		t.Errorf("LIST method with ?owner_entity_id: HTTP %d %s", status, body)
	}
	if status, body := listGrantsRaw(t, v, "LIST", url.Values{}, `{"provider":"other"}`); status != http.StatusOK || !strings.Contains(body, `"keys":["alices","elsewhere","refused"]`) {
		t.Errorf("LIST method with a body: HTTP %d %s, want the body ignored", status, body)
	}
	if out, err := v.CLI(t, "list", "oauth/grants", "status=active"); err == nil {
		t.Errorf("vault list with a parameter was accepted: %s", out)
	}
}

func detailedKeyInfo(t *testing.T, v *harness.Vault) map[string]map[string]any {
	t.Helper()
	out := v.MustCLI(t, "list", "-format=json", "-detailed", "oauth/grants")
	var detailed struct {
		Data struct {
			KeyInfo map[string]map[string]any `json:"key_info"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &detailed); err != nil {
		t.Fatalf("list -detailed: %v %s", err, out)
	}
	return detailed.Data.KeyInfo
}

func listGrants(t *testing.T, v *harness.Vault, query url.Values) (int, []string) {
	t.Helper()
	status, raw := listGrantsRaw(t, v, http.MethodGet, query, "")
	var body struct {
		Data struct {
			Keys []string `json:"keys"`
		} `json:"data"`
	}
	_ = json.Unmarshal([]byte(raw), &body)
	return status, body.Data.Keys
}

// listGrantsRaw sends LIST grants as GET ?list=true or with the LIST
// method, with query and an optional JSON body.
func listGrantsRaw(t *testing.T, v *harness.Vault, method string, query url.Values, body string) (int, string) {
	t.Helper()
	if method == http.MethodGet {
		query.Set("list", "true")
	}
	req, _ := http.NewRequest(method, v.Addr+"/v1/oauth/grants?"+query.Encode(), strings.NewReader(body))
	req.Header.Set("X-Vault-Token", v.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(raw)
}

// recent says whether v is an RFC 3339 time within the last minute.
func recent(v any) bool {
	s, _ := v.(string)
	at, err := time.Parse(time.RFC3339, s)
	return err == nil && time.Since(at) < time.Minute && time.Since(at) > -time.Minute
}
