package e2e

import (
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/tests/harness"
)

// TestFormPostCallbackKeepsTheCodeOutOfTheAuditLog: with the default query
// response mode the browser brings the code back in the callback's URL,
// which Vault's audit log records as request_uri. With response_mode
// form_post the real upstream makes the browser POST it: the code is then
// request data, which the audit log HMACs.
func TestFormPostCallbackKeepsTheCodeOutOfTheAuditLog(t *testing.T) {
	v := harness.StartVault(t)
	callback := v.Addr + "/v1/oauth/callback"
	up := harness.StartUpstream(t, harness.UpstreamOptions{RedirectURIs: []string{callback}})
	v.MustCLI(t, "write", "oauth/config", "redirect_uri="+callback)
	v.MustCLI(t, "write", "oauth/providers/local", "issuer="+up.URL, "client_id="+up.ClientID,
		"client_secret="+up.ClientSecret, "response_mode=form_post")

	started, err := v.Client.Logical().Write("oauth/grants/web/authorize", map[string]any{"provider": "local", "scopes": "offline_access,api:read"})
	if err != nil {
		t.Fatal(err)
	}
	authURL, _ := started.Data["authorization_url"].(string)
	if !strings.Contains(authURL, "response_mode=form_post") {
		t.Fatalf("authorization_url does not ask for form_post: %s", authURL)
	}
	action, fields := followToFormPost(t, authURL)
	if action != callback || fields.Get("code") == "" || fields.Get("state") != started.Data["state"] {
		t.Fatalf("the upstream's form posts to %q with fields %v", action, fields)
	}
	// The browser posts the form, with no Vault token.
	resp, err := http.PostForm(action, fields)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"status":"active"`) {
		t.Fatalf("form_post callback: HTTP %d %s", resp.StatusCode, body)
	}
	if s, err := v.Client.Logical().Write("oauth/roles/web", map[string]any{"grant": "web", "scopes": "api:read"}); err != nil || s == nil {
		t.Fatalf("role: %v", err)
	}
	if s, err := v.Client.Logical().Read("oauth/creds/web"); err != nil || !nonEmpty(s.Data["access_token"]) {
		t.Fatalf("creds from a form_post-authorized grant: %v", err)
	}
	harness.AssertNoNamedSecretsInLogs(t, v, map[string]string{
		"authorization code": fields.Get("code"),
		"state":              fields.Get("state"),
	})
}

var (
	formActionRE = regexp.MustCompile(`<form[^>]*action="([^"]+)"`)
	formInputRE  = regexp.MustCompile(`<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"`)
)

// followToFormPost acts as the browser up to the upstream's auto-submitting
// form_post page and returns the form's action and fields.
func followToFormPost(t *testing.T, authURL string) (string, url.Values) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar, Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	next, form := authURL, url.Values(nil)
	for hop := 0; hop < 10; hop++ {
		var resp *http.Response
		var err error
		if form != nil {
			resp, err = client.PostForm(next, form)
		} else {
			resp, err = client.Get(next)
		}
		if err != nil {
			t.Fatalf("authorize hop %d: %v", hop, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			m := formActionRE.FindSubmatch(body)
			if m == nil {
				t.Fatalf("authorize hop %d: a page without a form: %.300s", hop, body)
			}
			fields := url.Values{}
			for _, in := range formInputRE.FindAllSubmatch(body, -1) {
				fields.Set(html.UnescapeString(string(in[1])), html.UnescapeString(string(in[2])))
			}
			return html.UnescapeString(string(m[1])), fields
		}
		loc, err := resp.Location()
		if err != nil {
			t.Fatalf("authorize hop %d: %s answered %d without a redirect", hop, next, resp.StatusCode)
		}
		next, form = loc.String(), nil
		if strings.Contains(loc.Path, "/interaction/") {
			next, form = loc.String()+"/login", url.Values{"login": {"alice"}}
		}
	}
	t.Fatal("authorization flow did not reach the form_post page")
	return "", nil
}
