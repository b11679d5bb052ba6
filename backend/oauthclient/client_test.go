package oauthclient

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

func newTestClient(t *testing.T, srv *httptest.Server, method AuthMethod, mutate ...func(*Config)) *Client {
	t.Helper()
	hc, err := NewHTTPClient("", 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Endpoints: Endpoints{
			Token:         srv.URL + "/token",
			Revocation:    srv.URL + "/revoke",
			Introspection: srv.URL + "/introspect",
		},
		ClientID:     "client id/é",
		ClientSecret: "s3cret:&=+",
		AuthMethod:   method,
		HTTPClient:   hc,
	}
	for _, m := range mutate {
		m(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestClientAuthentication(t *testing.T) {
	var got *http.Request
	var form url.Values
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r
		r.ParseForm()
		form = r.PostForm
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"access_token":"at","token_type":"bearer","expires_in":60}`)
	}))
	defer srv.Close()

	t.Run("client_secret_basic form-encodes before base64", func(t *testing.T) {
		c := newTestClient(t, srv, ClientSecretBasic)
		if _, err := c.ClientCredentials(context.Background(), TokenOptions{}); err != nil {
			t.Fatal(err)
		}
		id, secret, ok := got.BasicAuth()
		if !ok {
			t.Fatal("no basic auth header")
		}
		if id != url.QueryEscape("client id/é") || secret != url.QueryEscape("s3cret:&=+") {
			t.Fatalf("basic auth = %q:%q", id, secret)
		}
		if form.Has("client_secret") || form.Has("client_id") {
			t.Fatalf("credentials also sent in body: %v", form)
		}
	})
	t.Run("client_secret_post", func(t *testing.T) {
		c := newTestClient(t, srv, ClientSecretPost)
		if _, err := c.ClientCredentials(context.Background(), TokenOptions{Scopes: []string{"a", "b"}}); err != nil {
			t.Fatal(err)
		}
		if _, _, ok := got.BasicAuth(); ok {
			t.Fatal("basic auth sent with client_secret_post")
		}
		if form.Get("client_id") != "client id/é" || form.Get("client_secret") != "s3cret:&=+" || form.Get("scope") != "a b" {
			t.Fatalf("form = %v", form)
		}
	})
	t.Run("none", func(t *testing.T) {
		c := newTestClient(t, srv, AuthNone, func(c *Config) { c.ClientSecret = "" })
		if _, err := c.Refresh(context.Background(), "rt", TokenOptions{}); err != nil {
			t.Fatal(err)
		}
		if form.Get("client_id") != "client id/é" || form.Has("client_secret") || got.Header.Get("Authorization") != "" {
			t.Fatalf("form = %v", form)
		}
	})
	t.Run("private_key_jwt", func(t *testing.T) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, _ := x509.MarshalPKCS8PrivateKey(key)
		signer, err := ParsePrivateKey(string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})))
		if err != nil {
			t.Fatal(err)
		}
		c := newTestClient(t, srv, PrivateKeyJWT, func(c *Config) { c.ClientSecret = ""; c.PrivateKey = signer; c.KeyID = "k1" })
		if _, err := c.ClientCredentials(context.Background(), TokenOptions{}); err != nil {
			t.Fatal(err)
		}
		if form.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
			t.Fatalf("form = %v", form)
		}
		tok, err := jwt.ParseSigned(form.Get("client_assertion"), []jose.SignatureAlgorithm{jose.ES256})
		if err != nil {
			t.Fatal(err)
		}
		if tok.Headers[0].KeyID != "k1" {
			t.Fatalf("kid = %q", tok.Headers[0].KeyID)
		}
		var claims jwt.Claims
		if err := tok.Claims(&key.PublicKey, &claims); err != nil {
			t.Fatal(err)
		}
		if err := claims.Validate(jwt.Expected{Issuer: "client id/é", Subject: "client id/é", AnyAudience: jwt.Audience{srv.URL + "/token"}}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestRefreshParsesResponse(t *testing.T) {
	for _, tc := range []struct {
		name, contentType, body string
		wantRT                  string
		wantScopes              []string
		wantScopeReturned       bool
		wantExpiry              bool
	}{
		{"json with rotation", "application/json", `{"access_token":"at","refresh_token":"rt2","expires_in":300,"scope":"a b"}`, "rt2", []string{"a", "b"}, true, true},
		{"json without rotation or scope", "application/json", `{"access_token":"at","token_type":"Bearer"}`, "", nil, false, false},
		{"expires_in as string", "application/json; charset=utf-8", `{"access_token":"at","expires_in":"3600"}`, "", nil, false, true},
		{"form encoded", "application/x-www-form-urlencoded", `access_token=at&scope=repo&refresh_token=r`, "r", []string{"repo"}, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.contentType)
				io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			tok, err := newTestClient(t, srv, ClientSecretBasic).Refresh(context.Background(), "rt", TokenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if tok.AccessToken != "at" || tok.RefreshToken != tc.wantRT || tok.ScopeReturned != tc.wantScopeReturned ||
				strings.Join(tok.Scopes, " ") != strings.Join(tc.wantScopes, " ") || tok.Expiry.IsZero() == tc.wantExpiry {
				t.Fatalf("token = %+v", tok)
			}
		})
	}
}

func TestErrorsAreTypedAndScrubbed(t *testing.T) {
	const refreshToken = "RT-very-secret-value"
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		check   func(t *testing.T, e *Error)
	}{
		{"invalid_grant echoing the token", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(400)
			io.WriteString(w, `{"error":"invalid_grant","error_description":"token `+refreshToken+` is revoked; client secret s3cret:&=+"}`)
		}, func(t *testing.T, e *Error) {
			if e.Code != ErrCodeInvalidGrant || e.StatusCode != 400 {
				t.Fatalf("%+v", e)
			}
		}},
		{"429 with Retry-After", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "7")
			w.WriteHeader(429)
		}, func(t *testing.T, e *Error) {
			if e.StatusCode != http.StatusTooManyRequests || e.RetryAfter != 7*time.Second {
				t.Fatalf("%+v", e)
			}
		}},
		{"garbage 200 body", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "<html>"+refreshToken+"</html>")
		}, func(t *testing.T, e *Error) {
			if e.StatusCode != 200 || e.Err == nil || e.Code != "" {
				t.Fatalf("%+v", e)
			}
		}},
		{"500 with html body", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(500)
			io.WriteString(w, "<h1>oops "+refreshToken+"</h1>")
		}, func(t *testing.T, e *Error) {
			if e.StatusCode != 500 || e.Code != "" {
				t.Fatalf("%+v", e)
			}
		}},
		{"redirect is not followed", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://127.0.0.1:1/elsewhere", http.StatusTemporaryRedirect)
		}, func(t *testing.T, e *Error) {
			if e.StatusCode != 307 || !errors.Is(e, errRedirect) {
				t.Fatalf("%+v", e)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				tc.handler(w, r)
			}))
			defer srv.Close()
			_, err := newTestClient(t, srv, ClientSecretBasic).Refresh(context.Background(), refreshToken, TokenOptions{})
			e, ok := AsError(err)
			if !ok {
				t.Fatalf("error %v is not *Error", err)
			}
			tc.check(t, e)
			if msg := err.Error(); strings.Contains(msg, refreshToken) || strings.Contains(msg, "s3cret") {
				t.Fatalf("secret in error: %s", msg)
			}
			// A failed refresh is never sent twice: a second try with a
			// rotating refresh token would trip reuse detection.
			if calls.Load() != 1 {
				t.Fatalf("token endpoint called %d times", calls.Load())
			}
		})
	}
}

func TestTimeoutIsTransportError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(500 * time.Millisecond)
	}))
	defer srv.Close()
	hc, _ := NewHTTPClient("", 100*time.Millisecond)
	c, _ := New(Config{Endpoints: Endpoints{Token: srv.URL}, ClientID: "c", AuthMethod: AuthNone, HTTPClient: hc})
	_, err := c.Refresh(context.Background(), "rt", TokenOptions{})
	e, ok := AsError(err)
	if !ok || e.StatusCode != 0 || e.Err == nil {
		t.Fatalf("err = %v", err)
	}
}

func TestRevokeIsIdempotent(t *testing.T) {
	var hints []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		hints = append(hints, r.PostForm.Get("token_type_hint"))
		if r.PostForm.Get("token") == "dead" {
			w.WriteHeader(400)
			io.WriteString(w, `{"error":"invalid_token"}`)
		}
	}))
	defer srv.Close()
	c := newTestClient(t, srv, ClientSecretBasic, func(c *Config) { c.Endpoints.Revocation = srv.URL })
	if err := c.Revoke(context.Background(), "live", HintAccessToken); err != nil {
		t.Fatal(err)
	}
	if err := c.Revoke(context.Background(), "dead", HintRefreshToken); err != nil {
		t.Fatalf("already-dead token: %v", err)
	}
	if strings.Join(hints, ",") != "access_token,refresh_token" {
		t.Fatalf("hints = %v", hints)
	}
	noEndpoint := newTestClient(t, srv, ClientSecretBasic, func(c *Config) { c.Endpoints.Revocation = "" })
	if err := noEndpoint.Revoke(context.Background(), "x", ""); !errors.Is(err, ErrNoRevocationEndpoint) {
		t.Fatalf("err = %v", err)
	}
}

func TestCheckEndpointURL(t *testing.T) {
	for raw, ok := range map[string]bool{
		"https://idp.example.com/token":    true,
		"http://127.0.0.1:9000/token":      true,
		"http://127.1.2.3/token":           true,
		"http://localhost:8080/token":      true,
		"http://[::1]:8080/token":          true,
		"http://idp.example.com/token":     false,
		"https://169.254.169.254/latest":   false,
		"https://[fe80::1]/x":              false,
		"ftp://idp.example.com/":           false,
		"https://user:pw@idp.example.com/": false,
		"https://idp.example.com/#frag":    false,
		"/relative":                        false,
	} {
		if err := CheckEndpointURL(raw); (err == nil) != ok {
			t.Errorf("%s: err = %v, want ok=%v", raw, err, ok)
		}
	}
}

func TestDiscovery(t *testing.T) {
	var srv *httptest.Server
	var paths []string
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths = append(paths, r.URL.Path)
		if r.URL.Path != "/.well-known/openid-configuration/" && r.URL.Path != "/tenant/.well-known/openid-configuration" {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(map[string]string{
			"issuer":              srv.URL + "/tenant",
			"token_endpoint":      srv.URL + "/tenant/token",
			"revocation_endpoint": srv.URL + "/tenant/revoke",
		})
	}))
	defer srv.Close()
	hc, _ := NewHTTPClient("", time.Second)
	md, err := Discover(context.Background(), hc, srv.URL+"/tenant")
	if err != nil {
		t.Fatal(err)
	}
	if md.TokenEndpoint != srv.URL+"/tenant/token" || md.Endpoints().Revocation != srv.URL+"/tenant/revoke" {
		t.Fatalf("metadata = %+v", md)
	}
	if strings.Join(paths, ",") != "/.well-known/oauth-authorization-server/tenant,/tenant/.well-known/openid-configuration" {
		t.Fatalf("RFC 8414 must be tried before OIDC: %v", paths)
	}
	if _, err := Discover(context.Background(), hc, srv.URL+"/other"); err == nil {
		t.Fatal("discovery of an issuer with no metadata succeeded")
	}
}

func TestDiscoveryRejectsIssuerMismatch(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"issuer":"https://evil.example.com","token_endpoint":"https://evil.example.com/token"}`)
	}))
	defer srv.Close()
	hc, _ := NewHTTPClient("", time.Second)
	if _, err := Discover(context.Background(), hc, srv.URL); err == nil || !strings.Contains(err.Error(), "names issuer") {
		t.Fatalf("err = %v", err)
	}
}

func TestDialRefusesLinkLocalAfterResolution(t *testing.T) {
	for addr, refused := range map[string]bool{
		"169.254.169.254:80":          true, // cloud metadata
		"[fe80::1]:443":               true,
		"0.0.0.0:80":                  true,
		"224.0.0.1:80":                true,
		"127.0.0.1:8200":              false,
		"10.1.2.3:443":                false,
		"[::ffff:169.254.169.254]:80": true,
	} {
		err := refuseForbiddenAddrs("tcp", addr, nil)
		if (err != nil) != refused {
			t.Errorf("%s: err = %v, want refused=%v", addr, err, refused)
		}
	}
}

func TestIDTokenSubject(t *testing.T) {
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	for _, tc := range []struct{ in, want string }{
		{enc(`{"alg":"RS256"}`) + "." + enc(`{"sub":"alice","iss":"x"}`) + ".sig", "alice"},
		{"", ""},
		{"not.a.jwt!", ""},
		{enc(`{}`) + "." + enc(`not json`) + ".x", ""},
		{enc(`{}`) + "." + enc(`{"sub":"`+strings.Repeat("a", 300)+`"}`) + ".x", ""},
	} {
		if got := idTokenSubject(tc.in); got != tc.want {
			t.Errorf("idTokenSubject(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
