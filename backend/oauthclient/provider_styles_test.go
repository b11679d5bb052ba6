package oauthclient

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// styleServer records what each path received and answers from a table.
type styleServer struct {
	mu       sync.Mutex
	requests []recorded
	answer   func(w http.ResponseWriter, r *http.Request, body string)
}

type recorded struct {
	method, path, auth, body, accept string
}

func (s *styleServer) start(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.requests = append(s.requests, recorded{r.Method, r.URL.Path, r.Header.Get("Authorization"), string(raw), r.Header.Get("Accept")})
		s.mu.Unlock()
		s.answer(w, r, string(raw))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func (s *styleServer) calls() []recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]recorded(nil), s.requests...)
}

func TestGitHubRevocation(t *testing.T) {
	s := &styleServer{answer: func(w http.ResponseWriter, r *http.Request, body string) {
		switch r.URL.Path {
		case "/token":
			// GitHub: the refresh rotates and answers form-encoded unless
			// asked for JSON.
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"access_token":"ghu_fresh","token_type":"bearer","expires_in":28800,"refresh_token":"ghr_next","refresh_token_expires_in":15897600}`))
		case "/applications/cid/token", "/applications/cid/grant":
			var b map[string]string
			if json.Unmarshal([]byte(body), &b) != nil || b["access_token"] == "" {
				w.WriteHeader(http.StatusUnprocessableEntity)
				return
			}
			if b["access_token"] == "ghu_unknown" {
				w.WriteHeader(http.StatusNotFound)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		}
	}}
	srv := s.start(t)
	c := newTestClient(t, srv, ClientSecretPost, func(c *Config) {
		c.ClientID, c.ClientSecret = "cid", "github-secret"
		c.Revocation = RevokeGitHub
		c.Endpoints.Revocation = srv.URL + "/applications/cid/token"
	})
	ctx := context.Background()

	if err := c.Revoke(ctx, "ghu_access", HintAccessToken); err != nil {
		t.Fatal(err)
	}
	if err := c.Revoke(ctx, "ghu_unknown", HintAccessToken); err != nil {
		t.Fatalf("an unknown token (404) must count as revoked: %v", err)
	}
	// A refresh token alone cannot be revoked at GitHub.
	if err := c.Revoke(ctx, "ghr_replaced", HintRefreshToken); !errors.Is(err, ErrRevokesWholeGrant) {
		t.Fatalf("refresh token revocation: %v, want ErrRevokesWholeGrant", err)
	}
	// The grant: a refresh for an access token, then DELETE .../grant.
	if replacement, err := c.RevokeGrant(ctx, "ghr_live"); err != nil || replacement != "" {
		t.Fatal(replacement, err)
	}
	calls := s.calls()
	if len(calls) != 4 {
		t.Fatalf("calls = %+v", calls)
	}
	del := calls[0]
	if del.method != http.MethodDelete || del.path != "/applications/cid/token" || del.body != `{"access_token":"ghu_access"}` ||
		del.auth != "Basic Y2lkOmdpdGh1Yi1zZWNyZXQ=" || del.accept != "application/vnd.github+json" {
		t.Errorf("token revocation request = %+v", del)
	}
	if calls[2].path != "/token" || !strings.Contains(calls[2].body, "refresh_token=ghr_live") {
		t.Errorf("grant revocation did not refresh first: %+v", calls[2])
	}
	if calls[3].method != http.MethodDelete || calls[3].path != "/applications/cid/grant" || calls[3].body != `{"access_token":"ghu_fresh"}` {
		t.Errorf("grant revocation request = %+v", calls[3])
	}
}

func TestGitHubRevokeGrantOfDeadGrantSucceeds(t *testing.T) {
	s := &styleServer{answer: func(w http.ResponseWriter, r *http.Request, _ string) {
		// GitHub answers a dead refresh token with 200 and its own code.
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"error":"bad_refresh_verification_code","error_description":"The refresh token passed is incorrect or expired."}`))
	}}
	srv := s.start(t)
	c := newTestClient(t, srv, ClientSecretPost, func(c *Config) {
		c.Revocation = RevokeGitHub
		c.Endpoints.Revocation = srv.URL + "/applications/cid/token"
		c.InvalidGrantCodes = []string{"bad_refresh_verification_code"}
	})
	_, err := c.Refresh(context.Background(), "ghr_dead", TokenOptions{})
	e, ok := AsError(err)
	if !ok || !IsInvalidGrant(err) || e.ProviderCode != "bad_refresh_verification_code" || e.StatusCode != 200 {
		t.Fatalf("refresh error = %#v", err)
	}
	if !strings.Contains(err.Error(), `"bad_refresh_verification_code"`) {
		t.Errorf("the message hides the provider's code: %s", err)
	}
	if _, err := c.RevokeGrant(context.Background(), "ghr_dead"); err != nil {
		t.Fatalf("revoking a dead grant: %v", err)
	}
	if n := len(s.calls()); n != 2 {
		t.Fatalf("%d calls, want 2 refreshes and no DELETE", n)
	}
	// Without the mapping the code stays what the provider sent.
	c2 := newTestClient(t, srv, ClientSecretPost)
	if _, err := c2.Refresh(context.Background(), "ghr_dead", TokenOptions{}); IsInvalidGrant(err) || !HasCode(err, "bad_refresh_verification_code") {
		t.Fatalf("unmapped error = %v", err)
	}
}

func TestSlackRevocation(t *testing.T) {
	s := &styleServer{answer: func(w http.ResponseWriter, r *http.Request, _ string) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		switch {
		case r.URL.Path == "/api/oauth.v2.access":
			w.Write([]byte(`{"ok":true,"access_token":"xoxe.xoxp-fresh","token_type":"user","expires_in":43200,"refresh_token":"xoxe-1-next","team":{"id":"T123","name":"Acme"}}`))
		case r.Header.Get("Authorization") == "Bearer xoxe.xoxp-dead":
			w.Write([]byte(`{"ok":false,"error":"token_revoked"}`))
		case r.Header.Get("Authorization") == "Bearer xoxe.xoxp-busy":
			w.Write([]byte(`{"ok":false,"error":"ratelimited"}`))
		default:
			w.Write([]byte(`{"ok":true,"revoked":true}`))
		}
	}}
	srv := s.start(t)
	c := newTestClient(t, srv, ClientSecretPost, func(c *Config) {
		c.Revocation = RevokeSlack
		c.Endpoints.Token = srv.URL + "/api/oauth.v2.access"
		c.Endpoints.Revocation = srv.URL + "/api/auth.revoke"
		c.ResponseFields = []string{"team.id", "team.name"}
	})
	ctx := context.Background()
	if err := c.Revoke(ctx, "xoxe.xoxp-live", HintAccessToken); err != nil {
		t.Fatal(err)
	}
	if err := c.Revoke(ctx, "xoxe.xoxp-dead", HintAccessToken); err != nil {
		t.Fatalf("an already revoked token: %v", err)
	}
	err := c.Revoke(ctx, "xoxe.xoxp-busy", HintAccessToken)
	if !HasCode(err, "ratelimited") || strings.Contains(err.Error(), "xoxe.xoxp-busy") {
		t.Fatalf("ok:false must be an error without the token: %v", err)
	}
	if _, err := c.RevokeGrant(ctx, "xoxe-1-live"); err != nil {
		t.Fatal(err)
	}
	calls := s.calls()
	if calls[0].auth != "Bearer xoxe.xoxp-live" || calls[0].method != http.MethodPost || calls[0].path != "/api/auth.revoke" {
		t.Errorf("auth.revoke request = %+v", calls[0])
	}
	last := calls[len(calls)-1]
	if last.auth != "Bearer xoxe.xoxp-fresh" {
		t.Errorf("grant revocation revoked %q, want the fresh access token", last.auth)
	}
	tok, err := c.Refresh(ctx, "xoxe-1-live", TokenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if tok.Fields["team.id"] != "T123" || tok.Fields["team.name"] != "Acme" || len(tok.Fields) != 2 {
		t.Errorf("fields = %v", tok.Fields)
	}
}

func TestNoRevocationStyle(t *testing.T) {
	s := &styleServer{answer: func(w http.ResponseWriter, _ *http.Request, _ string) { w.WriteHeader(http.StatusOK) }}
	srv := s.start(t)
	c := newTestClient(t, srv, ClientSecretPost, func(c *Config) { c.Revocation = RevokeNone })
	if err := c.Revoke(context.Background(), "at", HintAccessToken); !errors.Is(err, ErrNoRevocationEndpoint) {
		t.Fatalf("Revoke = %v", err)
	}
	if _, err := c.RevokeGrant(context.Background(), "rt"); !errors.Is(err, ErrNoRevocationEndpoint) {
		t.Fatalf("RevokeGrant = %v", err)
	}
	if n := len(s.calls()); n != 0 {
		t.Fatalf("%d calls to a provider that cannot revoke", n)
	}
	if _, err := New(Config{ClientID: "c", AuthMethod: AuthNone, HTTPClient: http.DefaultClient, Revocation: "bogus"}); err == nil {
		t.Fatal("an unknown revocation style was accepted")
	}
}

func TestLifetimesAndFields(t *testing.T) {
	var body, contentType string
	s := &styleServer{answer: func(w http.ResponseWriter, _ *http.Request, _ string) {
		w.Header().Set("Content-Type", contentType)
		w.Write([]byte(body))
	}}
	srv := s.start(t)
	salesforce := newTestClient(t, srv, ClientSecretPost, func(c *Config) {
		c.DefaultLifetime = 2 * time.Hour
		c.ResponseFields = []string{"instance_url", "issued_at", "refresh_token", "missing", "nested"}
	})
	plain := newTestClient(t, srv, ClientSecretPost)
	for _, tc := range []struct {
		name, contentType, body string
		client                  *Client
		lifetime, refreshLife   time.Duration
		fields                  map[string]string
	}{
		{"salesforce: no expires_in, the default applies", "application/json",
			`{"access_token":"00D!x","instance_url":"https://acme.my.salesforce.com","issued_at":"1700000000000","token_type":"Bearer","nested":{"a":1}}`,
			salesforce, 2 * time.Hour, 0, map[string]string{"instance_url": "https://acme.my.salesforce.com", "issued_at": "1700000000000"}},
		{"expires_in wins over the default", "application/json", `{"access_token":"a","expires_in":60}`,
			salesforce, time.Minute, 0, map[string]string{}},
		{"no default: no expiry", "application/json", `{"access_token":"a"}`, plain, 0, 0, nil},
		{"github app: refresh_token_expires_in", "application/json",
			`{"access_token":"ghu_a","expires_in":28800,"refresh_token":"ghr_b","refresh_token_expires_in":15897600,"token_type":"bearer"}`,
			plain, 8 * time.Hour, 15897600 * time.Second, nil},
		{"form-encoded, as GitHub answers without Accept", "application/x-www-form-urlencoded",
			"access_token=ghu_a&expires_in=28800&refresh_token=ghr_b&refresh_token_expires_in=15897600&token_type=bearer",
			plain, 8 * time.Hour, 15897600 * time.Second, nil},
		{"refresh_token_expires_in without a refresh token is ignored", "application/json",
			`{"access_token":"a","refresh_token_expires_in":100}`, plain, 0, 0, nil},
		{"form fields, the refresh token is never kept", "application/x-www-form-urlencoded",
			"access_token=a&refresh_token=r&instance_url=https%3A%2F%2Fx.example.com",
			salesforce, 2 * time.Hour, 0, map[string]string{"instance_url": "https://x.example.com"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, contentType = tc.body, tc.contentType
			before := time.Now()
			tok, err := tc.client.Refresh(context.Background(), "rt", TokenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			checkLife := func(what string, got time.Time, want time.Duration) {
				if want == 0 {
					if !got.IsZero() {
						t.Errorf("%s = %v, want none", what, got)
					}
					return
				}
				if d := got.Sub(before); d > want || d < want-3*time.Second {
					t.Errorf("%s in %v, want just under %v", what, d, want)
				}
			}
			checkLife("expiry", tok.Expiry, tc.lifetime)
			checkLife("refresh expiry", tok.RefreshExpiry, tc.refreshLife)
			if tc.fields == nil {
				if tok.Fields != nil {
					t.Errorf("fields = %v, want none", tok.Fields)
				}
			} else if len(tok.Fields) != len(tc.fields) {
				t.Errorf("fields = %v, want %v", tok.Fields, tc.fields)
			} else {
				for k, v := range tc.fields {
					if tok.Fields[k] != v {
						t.Errorf("field %s = %q, want %q", k, tok.Fields[k], v)
					}
				}
			}
			if _, kept := tok.Fields["refresh_token"]; kept {
				t.Error("the refresh token was kept as a field")
			}
		})
	}
}

// A grant revocation that refreshed and then failed hands back the rotated
// refresh token: the old one is dead, and a retry with it would take the
// authorization for revoked while it lives on.
func TestRevokeGrantFailureKeepsTheRotatedToken(t *testing.T) {
	s := &styleServer{answer: func(w http.ResponseWriter, r *http.Request, _ string) {
		if r.URL.Path == "/token" {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"access_token":"ghu_fresh","expires_in":28800,"refresh_token":"ghr_next"}`))
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	}}
	srv := s.start(t)
	c := newTestClient(t, srv, ClientSecretPost, func(c *Config) {
		c.Revocation = RevokeGitHub
		c.Endpoints.Revocation = srv.URL + "/applications/cid/token"
	})
	replacement, err := c.RevokeGrant(context.Background(), "ghr_live")
	if err == nil || replacement != "ghr_next" {
		t.Fatalf("RevokeGrant = %q, %v; want the rotated token and the error", replacement, err)
	}
	if strings.Contains(err.Error(), "ghr_") || strings.Contains(err.Error(), "ghu_") {
		t.Fatalf("error carries a token: %v", err)
	}
}

func TestScopeDelimiterJSONRequestsAndScopesField(t *testing.T) {
	var reply string
	s := &styleServer{answer: func(w http.ResponseWriter, _ *http.Request, _ string) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(reply))
	}}
	srv := s.start(t)
	slack := newTestClient(t, srv, ClientSecretPost, func(c *Config) { c.ScopeDelimiter = "," })
	reply = `{"ok":true,"access_token":"xoxe.xoxb-1","scope":"chat:write,channels:read"}`
	tok, err := slack.Refresh(context.Background(), "xoxe-1-rt", TokenOptions{Scopes: []string{"chat:write", "channels:read"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(tok.Scopes, " "); got != "chat:write channels:read" {
		t.Errorf("comma-separated scope read as %q", tok.Scopes)
	}
	if body := s.calls()[0].body; !strings.Contains(body, "scope=chat%3Awrite%2Cchannels%3Aread") {
		t.Errorf("scopes not joined with commas: %s", body)
	}
	if u := slack.AuthCodeURL("https://vault.example.com/cb", "st", strings.Repeat("v", 43), []string{"a", "b"}, nil); !strings.Contains(u, "scope=a%2Cb") {
		t.Errorf("authorization URL scope: %s", u)
	}

	// Atlassian: a JSON token request, the client's credentials inside.
	atlassian := newTestClient(t, srv, ClientSecretPost, func(c *Config) { c.JSONRequests = true })
	reply = `{"access_token":"at","expires_in":3600,"scope":"read:jira-work offline_access"}`
	if _, err := atlassian.Refresh(context.Background(), "rt-1", TokenOptions{}); err != nil {
		t.Fatal(err)
	}
	var sent map[string]string
	if err := json.Unmarshal([]byte(s.calls()[1].body), &sent); err != nil {
		t.Fatalf("token request is not JSON: %s", s.calls()[1].body)
	}
	if sent["grant_type"] != "refresh_token" || sent["refresh_token"] != "rt-1" || sent["client_id"] == "" || sent["client_secret"] == "" {
		t.Errorf("JSON token request = %v", sent)
	}

	// Bitbucket names its scopes "scopes".
	plain := newTestClient(t, srv, ClientSecretBasic)
	reply = `{"access_token":"at","scopes":"account repository","expires_in":7200,"state":"refresh_token"}`
	tok, err = plain.Refresh(context.Background(), "rt", TokenOptions{})
	if err != nil || !tok.ScopeReturned || strings.Join(tok.Scopes, " ") != "account repository" {
		t.Fatalf("bitbucket scopes = %v (%v)", tok, err)
	}
	// An array there is not a scope string and does not break the parse.
	reply = `{"access_token":"at","scopes":["a"]}`
	if tok, err = plain.Refresh(context.Background(), "rt", TokenOptions{}); err != nil || tok.ScopeReturned {
		t.Fatalf("array scopes: %v %v", tok, err)
	}
}
