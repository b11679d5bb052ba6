package oauthclient

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The secrets the hardening tests send. They mix characters that every
// encoding treats differently, so each encoded form is distinct.
const (
	hRefreshToken = "RT.9f8Ak2Lm/Qw+e=Zx_7Yb-Tn4Hs0Vc"
	hAccessToken  = "AT-4kQ9/zP+w=Lm_x7Yb.Tn2Hs8Vc3Jd"
	hDeviceCode   = "DC~5hG2/kL+p=Wq_3Rt.Yu7Io9Pa1Sd"
	hAuthCode     = "AC-7uY3/hN+q=Jm_9Kl.Op2Zx4Cv6Bn"
	hClientSecret = `cs/8Hq+Lm=Zp:&é x"<>`
	hClientID     = "client id/é"
)

// jsonEscapes returns the ways JSON encoders of different languages write s
// inside a string literal: Go (HTML-escaping or not), Python (ASCII only),
// PHP (ASCII only and "\/").
func jsonEscapes(s string) []string {
	var out []string
	for _, html := range []bool{false, true} {
		for _, ascii := range []bool{false, true} {
			for _, slash := range []bool{false, true} {
				out = append(out, testJSONEscape(s, html, ascii, slash))
			}
		}
	}
	return out
}

func testJSONEscape(s string, html, ascii, slash bool) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '/' && slash:
			b.WriteString(`\/`)
		case r < 0x20, html && (r == '<' || r == '>' || r == '&'), ascii && r > 0x7e:
			if r > 0xffff {
				r1, r2 := utf16Pair(r)
				fmt.Fprintf(&b, `\u%04x\u%04x`, r1, r2)
			} else {
				fmt.Fprintf(&b, `\u%04x`, r)
			}
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func utf16Pair(r rune) (rune, rune) {
	r -= 0x10000
	return 0xd800 + (r>>10)&0x3ff, 0xdc00 + r&0x3ff
}

// encodedForms is every encoding of s that must never reach error text.
func encodedForms(s string) map[string]string {
	forms := map[string]string{
		"raw":       s,
		"query":     url.QueryEscape(s),
		"path":      url.PathEscape(s),
		"b64std":    base64.StdEncoding.EncodeToString([]byte(s)),
		"b64url":    base64.URLEncoding.EncodeToString([]byte(s)),
		"b64rawstd": base64.RawStdEncoding.EncodeToString([]byte(s)),
		"b64rawurl": base64.RawURLEncoding.EncodeToString([]byte(s)),
	}
	for i, j := range jsonEscapes(s) {
		forms[fmt.Sprintf("json%d", i)] = j
	}
	return forms
}

func assertNoSecret(t *testing.T, msg string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if len(s) < 4 {
			continue
		}
		for name, f := range encodedForms(s) {
			if strings.Contains(msg, f) {
				t.Errorf("error text carries the %s form %q of a secret: %s", name, f, msg)
			}
		}
	}
}

// echoModes are the ways a test upstream echoes a secret it received.
var echoModes = map[string]func(string) string{
	"raw":            func(s string) string { return s },
	"query":          url.QueryEscape,
	"path":           url.PathEscape,
	"query-lowerhex": func(s string) string { return lowerHexEscapes(url.QueryEscape(s)) },
	"b64std":         func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) },
	"b64url":         func(s string) string { return base64.URLEncoding.EncodeToString([]byte(s)) },
	"b64rawstd":      func(s string) string { return base64.RawStdEncoding.EncodeToString([]byte(s)) },
	"b64rawurl":      func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) },
	// base64 of a larger text holding the secret at each alignment
	"b64embedded0": func(s string) string { return base64.StdEncoding.EncodeToString([]byte("token=" + s + "&x=1")) },
	"b64embedded1": func(s string) string { return base64.StdEncoding.EncodeToString([]byte("tokens=" + s + "&x=1")) },
	"b64embedded2": func(s string) string { return base64.URLEncoding.EncodeToString([]byte("tokens:=" + s + "&x=1")) },
	"json-go":      func(s string) string { return testJSONEscape(s, true, false, false) },
	"json-python":  func(s string) string { return testJSONEscape(s, false, true, false) },
	"json-php":     func(s string) string { return testJSONEscape(s, false, true, true) },
	"double-json": func(s string) string {
		b, _ := json.Marshal(s)
		return string(b)
	},
	// an upstream that echoes only a long middle part of the value
	"partial": func(s string) string {
		if len(s) < 26 {
			return ""
		}
		return s[len(s)-22 : len(s)-4]
	},
	"partial-query": func(s string) string {
		q := url.QueryEscape(s)
		if len(q) < 30 {
			return ""
		}
		return q[len(q)-28 : len(q)-5]
	},
}

func lowerHexEscapes(s string) string {
	b := []byte(s)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' {
			b[i+1] = byte(strings.ToLower(string(b[i+1]))[0])
			b[i+2] = byte(strings.ToLower(string(b[i+2]))[0])
		}
	}
	return string(b)
}

// echoUpstream answers every request with an OAuth error whose description
// echoes, in one encoding, every credential the request carried. echoed
// collects what it wrote, so the test can check each one is gone and that
// the echo really happened.
type echoUpstream struct {
	mu     sync.Mutex
	echoed []string
	sent   []string // raw credentials seen (basic header value, assertion, ...)
	status int
	code   string
	enc    func(string) string
}

func (u *echoUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r.ParseForm()
	var values []string
	for _, k := range []string{"refresh_token", "token", "device_code", "code", "code_verifier", "subject_token", "client_secret", "client_assertion"} {
		if v := r.PostForm.Get(k); v != "" {
			values = append(values, v)
			if k == "client_assertion" {
				values = append(values, strings.Split(v, ".")...)
			}
		}
	}
	if h := r.Header.Get("Authorization"); h != "" {
		b64 := strings.TrimPrefix(h, "Basic ")
		creds, _ := base64.StdEncoding.DecodeString(b64)
		values = append(values, h, b64, string(creds))
	}
	u.mu.Lock()
	var parts []string
	for _, v := range values {
		u.sent = append(u.sent, v)
		if e := u.enc(v); e != "" {
			u.echoed = append(u.echoed, e)
			parts = append(parts, e)
		}
	}
	u.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(u.status)
	json.NewEncoder(w).Encode(map[string]string{
		"error":             u.code,
		"error_description": "request carried " + strings.Join(parts, " and ") + " which is not acceptable",
	})
}

func hardeningClient(t *testing.T, base string, method AuthMethod) *Client {
	t.Helper()
	hc, err := NewHTTPClient("", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Endpoints: Endpoints{
			Token:               base + "/token",
			Revocation:          base + "/revoke",
			Introspection:       base + "/introspect",
			DeviceAuthorization: base + "/device",
		},
		ClientID:     hClientID,
		ClientSecret: hClientSecret,
		AuthMethod:   method,
		HTTPClient:   hc,
	}
	if method == PrivateKeyJWT {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		cfg.ClientSecret, cfg.PrivateKey, cfg.KeyID = "", key, "k1"
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// endpointCalls exercises the error path of every endpoint the engine uses.
var endpointCalls = map[string]func(context.Context, *Client) error{
	"client_credentials": func(ctx context.Context, c *Client) error {
		_, err := c.ClientCredentials(ctx, TokenOptions{})
		return err
	},
	"refresh": func(ctx context.Context, c *Client) error {
		_, err := c.Refresh(ctx, hRefreshToken, TokenOptions{})
		return err
	},
	"code_exchange": func(ctx context.Context, c *Client) error {
		_, err := c.ExchangeCode(ctx, hAuthCode, "http://127.0.0.1/cb", NewCodeVerifier())
		return err
	},
	"token_exchange": func(ctx context.Context, c *Client) error {
		_, err := c.Exchange(ctx, hAccessToken, TokenTypeAccessToken, TokenOptions{})
		return err
	},
	"revoke": func(ctx context.Context, c *Client) error {
		return c.Revoke(ctx, hAccessToken, HintAccessToken)
	},
	"introspect": func(ctx context.Context, c *Client) error {
		_, err := c.Introspect(ctx, hAccessToken, HintAccessToken)
		return err
	},
	"device_authorization": func(ctx context.Context, c *Client) error {
		_, err := c.StartDevice(ctx, []string{"a"})
		return err
	},
	"device_poll": func(ctx context.Context, c *Client) error {
		_, err := c.PollDevice(ctx, hDeviceCode)
		return err
	},
}

func TestErrorTextNeverCarriesEncodedSecrets(t *testing.T) {
	for _, method := range []AuthMethod{ClientSecretBasic, ClientSecretPost, PrivateKeyJWT} {
		for mode, enc := range echoModes {
			for name, call := range endpointCalls {
				t.Run(fmt.Sprintf("%s/%s/%s", method, mode, name), func(t *testing.T) {
					up := &echoUpstream{status: 400, code: "invalid_request", enc: enc}
					srv := httptest.NewServer(up)
					defer srv.Close()
					err := call(context.Background(), hardeningClient(t, srv.URL, method))
					e, ok := AsError(err)
					if !ok || e.Code != "invalid_request" || e.StatusCode != 400 {
						t.Fatalf("want an invalid_request *Error, got %#v", err)
					}
					msg := err.Error()
					up.mu.Lock()
					defer up.mu.Unlock()
					if len(up.sent) == 0 {
						t.Fatal("the request carried no credential to echo")
					}
					assertNoSecret(t, msg, append([]string{hRefreshToken, hAccessToken, hDeviceCode, hAuthCode, hClientSecret}, up.sent...)...)
					for _, echoed := range up.echoed {
						if len(echoed) >= 8 && strings.Contains(msg, echoed) {
							t.Errorf("echoed text %q survived: %s", echoed, msg)
						}
					}
				})
			}
		}
	}
}

// An upstream description without secrets stays readable.
func TestPlainDescriptionIsKept(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(400)
		io.WriteString(w, `{"error":"invalid_grant","error_description":"The refresh token has expired, see login.example.com for details"}`)
	}))
	defer srv.Close()
	_, err := hardeningClient(t, srv.URL, ClientSecretBasic).Refresh(context.Background(), hRefreshToken, TokenOptions{})
	e, ok := AsError(err)
	if !ok || e.Description != "The refresh token has expired, see login.example.com for details" {
		t.Fatalf("err = %#v", err)
	}
}

// A server that answers with a malformed status line echoing the request puts
// upstream text into a Go transport error; it must be scrubbed like a body.
func TestTransportErrorIsScrubbed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				req, err := http.ReadRequest(bufio.NewReader(conn))
				if err != nil {
					return
				}
				req.ParseForm()
				rt := req.PostForm.Get("refresh_token")
				// No space: Go quotes the whole line in its error.
				line := "HTTP/1.1_" + rt + "_" + url.QueryEscape(rt) + "_" + strings.ReplaceAll(req.Header.Get("Authorization"), " ", "_")
				io.WriteString(conn, line+"\r\n\r\n")
			}()
		}
	}()
	c := hardeningClient(t, "http://"+ln.Addr().String(), ClientSecretBasic)
	_, err = c.Refresh(context.Background(), hRefreshToken, TokenOptions{})
	e, ok := AsError(err)
	if !ok || e.Err == nil || e.StatusCode != 0 {
		t.Fatalf("want a transport *Error, got %#v", err)
	}
	creds := url.QueryEscape(hClientID) + ":" + url.QueryEscape(hClientSecret)
	assertNoSecret(t, err.Error(), hRefreshToken, hClientSecret, creds, base64.StdEncoding.EncodeToString([]byte(creds)))
	if !strings.Contains(err.Error(), "malformed") {
		t.Fatalf("the transport error lost its meaning: %v", err)
	}
}

func TestOAuthErrorOnAnyStatus(t *testing.T) {
	type call = func(context.Context, *Client) error
	for _, tc := range []struct {
		name        string
		call        string
		status      int
		contentType string
		body        string
		wantCode    string
	}{
		{"refresh 200 json invalid_grant", "refresh", 200, "application/json", `{"error":"invalid_grant","error_description":"bad"}`, ErrCodeInvalidGrant},
		{"refresh 200 slack ok=false", "refresh", 200, "application/json; charset=utf-8", `{"ok":false,"error":"invalid_refresh_token"}`, "invalid_refresh_token"},
		{"refresh 200 github form", "refresh", 200, "application/x-www-form-urlencoded; charset=utf-8", `error=bad_refresh_token&error_description=The+refresh+token+passed+is+incorrect+or+expired.&error_uri=https%3A%2F%2Fdocs.github.com`, "bad_refresh_token"},
		{"refresh 400 form", "refresh", 400, "application/x-www-form-urlencoded", `error=invalid_grant&error_description=expired`, ErrCodeInvalidGrant},
		{"refresh 200 text/plain form", "refresh", 200, "text/plain", `error=invalid_grant`, ErrCodeInvalidGrant},
		{"code exchange 200 github", "code_exchange", 200, "application/json", `{"error":"bad_verification_code","error_description":"The code passed is incorrect or expired.","error_uri":"https://docs.github.com"}`, "bad_verification_code"},
		{"client credentials 200", "client_credentials", 200, "application/json", `{"error":"invalid_client"}`, ErrCodeInvalidClient},
		{"token exchange 200", "token_exchange", 200, "application/json", `{"error":"invalid_target"}`, ErrCodeInvalidTarget},
		{"device poll 200 pending", "device_poll", 200, "application/json", `{"error":"authorization_pending","error_description":"waiting"}`, ErrCodeAuthorizationPending},
		{"device poll 200 slow_down", "device_poll", 200, "application/json", `{"error":"slow_down","interval":10}`, ErrCodeSlowDown},
		{"device poll 200 access_denied form", "device_poll", 200, "application/x-www-form-urlencoded", `error=access_denied`, ErrCodeAccessDenied},
		{"device poll 200 expired", "device_poll", 200, "application/json", `{"error":"expired_token"}`, ErrCodeExpiredToken},
		{"device authorization 200", "device_authorization", 200, "application/json", `{"error":"unauthorized_client"}`, ErrCodeUnauthorizedClient},
		{"device authorization 400 form", "device_authorization", 400, "application/x-www-form-urlencoded", `error=invalid_scope`, ErrCodeInvalidScope},
		{"revoke 200", "revoke", 200, "application/json", `{"error":"unsupported_token_type"}`, ErrCodeUnsupportedTokenType},
		{"revoke 400 form", "revoke", 400, "application/x-www-form-urlencoded", `error=invalid_client`, ErrCodeInvalidClient},
		{"introspect 200", "introspect", 200, "application/json", `{"error":"invalid_client"}`, ErrCodeInvalidClient},
		{"introspect 401 form", "introspect", 401, "application/x-www-form-urlencoded", `error=invalid_client`, ErrCodeInvalidClient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.contentType)
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			var f call = endpointCalls[tc.call]
			err := f(context.Background(), hardeningClient(t, srv.URL, ClientSecretBasic))
			e, ok := AsError(err)
			if !ok {
				t.Fatalf("err = %v, want *Error", err)
			}
			if e.Code != tc.wantCode || e.StatusCode != tc.status || !HasCode(err, tc.wantCode) {
				t.Fatalf("got code %q status %d, want %q %d (%v)", e.Code, e.StatusCode, tc.wantCode, tc.status, err)
			}
		})
	}
}

// Slack's {"ok":false} without an error string is still a failure.
func TestSlackOKFalseWithoutCode(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ok":false,"access_token":"at"}`)
	}))
	defer srv.Close()
	_, err := hardeningClient(t, srv.URL, ClientSecretBasic).Refresh(context.Background(), hRefreshToken, TokenOptions{})
	e, ok := AsError(err)
	if !ok || e.StatusCode != 200 || e.Code != "" || e.Err == nil {
		t.Fatalf("err = %#v", err)
	}
}

func TestIsInvalidGrant(t *testing.T) {
	if !IsInvalidGrant(fmt.Errorf("wrapped: %w", &Error{Code: ErrCodeInvalidGrant})) {
		t.Fatal("invalid_grant not recognised")
	}
	for _, err := range []error{nil, &Error{Code: "invalid_refresh_token"}, &Error{StatusCode: 400}, io.EOF} {
		if IsInvalidGrant(err) {
			t.Fatalf("%v taken for invalid_grant", err)
		}
	}
}

func TestExpiresInIsClamped(t *testing.T) {
	const (
		zero = iota
		exact
		ceiling
		malformed
	)
	for _, tc := range []struct {
		name  string
		value string // JSON literal; "" for a form-encoded body
		form  string
		want  int
		secs  int64
	}{
		{"plain", `3600`, "", exact, 3600},
		{"string", `"3600"`, "", exact, 3600},
		{"padded string", `" 60 "`, "", exact, 60},
		{"fraction", `59.9`, "", exact, 59},
		{"exponent", `3.6e3`, "", exact, 3600},
		{"just under a year", `31535999`, "", exact, 31535999},
		{"1e19", `1e19`, "", ceiling, 0},
		{"1e400", `1e400`, "", ceiling, 0},
		{"max int64", `9223372036854775807`, "", ceiling, 0},
		{"max uint64+", `18446744073709551616`, "", ceiling, 0},
		{"huge string", `"1e19"`, "", ceiling, 0},
		{"int32 max", `2147483647`, "", ceiling, 0},
		{"zero", `0`, "", zero, 0},
		{"negative", `-5`, "", zero, 0},
		{"-1e19", `-1e19`, "", zero, 0},
		{"null", `null`, "", zero, 0},
		{"sub-second", `0.5`, "", zero, 0},
		{"NaN string", `"NaN"`, "", malformed, 0},
		{"Inf string", `"Inf"`, "", malformed, 0},
		{"+Infinity string", `"+Infinity"`, "", malformed, 0},
		{"-Inf string", `"-Inf"`, "", malformed, 0},
		{"hex string", `"0x10"`, "", malformed, 0},
		{"word", `"soon"`, "", malformed, 0},
		{"empty string", `""`, "", malformed, 0},
		{"bool", `true`, "", malformed, 0},
		{"object", `{}`, "", malformed, 0},
		{"form plain", "", "access_token=at&expires_in=120", exact, 120},
		{"form NaN", "", "access_token=at&expires_in=NaN", malformed, 0},
		{"form huge", "", "access_token=at&expires_in=1e19", ceiling, 0},
		{"form negative", "", "access_token=at&expires_in=-1", zero, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.form != "" {
					w.Header().Set("Content-Type", "application/x-www-form-urlencoded")
					io.WriteString(w, tc.form)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, `{"access_token":"at","expires_in":`+tc.value+`}`)
			}))
			defer srv.Close()
			before := time.Now()
			tok, err := hardeningClient(t, srv.URL, ClientSecretBasic).Refresh(context.Background(), hRefreshToken, TokenOptions{})
			after := time.Now()
			if tc.want == malformed {
				e, ok := AsError(err)
				if !ok || e.Err == nil || !strings.Contains(err.Error(), "expires_in") {
					t.Fatalf("err = %v, tok = %+v; want a malformed expires_in error", err, tok)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var lo, hi time.Time
			switch tc.want {
			case zero:
				if !tok.Expiry.IsZero() {
					t.Fatalf("expiry = %v, want none", tok.Expiry)
				}
				return
			case exact:
				// Counted from the send, a second early: never later
				// than the server's own expiry.
				d := time.Duration(tc.secs)*time.Second - time.Second
				lo, hi = before.Add(d), after.Add(d)
			case ceiling:
				lo, hi = before.Add(MaxTokenLifetime-time.Second), after.Add(MaxTokenLifetime-time.Second)
			}
			if tok.Expiry.Before(lo) || tok.Expiry.After(hi) {
				t.Fatalf("expiry = %v, want within [%v, %v]", tok.Expiry, lo, hi)
			}
		})
	}
}

func TestDeviceAuthorizationIsClamped(t *testing.T) {
	for _, tc := range []struct {
		name         string
		expiresIn    string
		interval     string
		wantLifetime time.Duration // 0: no expiry given
		wantInterval time.Duration
		wantErr      bool
	}{
		{"plain", `600`, `5`, 600 * time.Second, 5 * time.Second, false},
		{"strings", `"900"`, `"7"`, 900 * time.Second, 7 * time.Second, false},
		{"missing", `null`, `null`, 0, DefaultDeviceInterval, false},
		{"absurd lifetime", `9000000000000000000`, `5`, MaxDeviceFlowLifetime, 5 * time.Second, false},
		{"1e19 lifetime", `1e19`, `5`, MaxDeviceFlowLifetime, 5 * time.Second, false},
		{"long lifetime", `86400`, `5`, MaxDeviceFlowLifetime, 5 * time.Second, false},
		{"negative lifetime", `-600`, `5`, 0, 5 * time.Second, false},
		{"absurd interval", `600`, `1000000000`, 600 * time.Second, MaxDeviceInterval, false},
		{"1e19 interval", `600`, `1e19`, 600 * time.Second, MaxDeviceInterval, false},
		{"negative interval", `600`, `-3`, 600 * time.Second, DefaultDeviceInterval, false},
		{"zero interval", `600`, `0`, 600 * time.Second, DefaultDeviceInterval, false},
		{"NaN lifetime", `"NaN"`, `5`, 0, 0, true},
		{"word interval", `600`, `"often"`, 0, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, `{"device_code":"dc","user_code":"UC","verification_uri":"https://x/device","expires_in":`+tc.expiresIn+`,"interval":`+tc.interval+`}`)
			}))
			defer srv.Close()
			before := time.Now()
			da, err := hardeningClient(t, srv.URL, ClientSecretBasic).StartDevice(context.Background(), nil)
			after := time.Now()
			if tc.wantErr {
				if _, ok := AsError(err); !ok {
					t.Fatalf("err = %v, da = %+v; want *Error", err, da)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if da.Interval != tc.wantInterval {
				t.Fatalf("interval = %v, want %v", da.Interval, tc.wantInterval)
			}
			if tc.wantLifetime == 0 {
				if !da.Expiry.IsZero() {
					t.Fatalf("expiry = %v, want none", da.Expiry)
				}
				return
			}
			if da.Expiry.Before(before.Add(tc.wantLifetime)) || da.Expiry.After(after.Add(tc.wantLifetime)) {
				t.Fatalf("expiry = %v, want now+%v", da.Expiry, tc.wantLifetime)
			}
		})
	}
}

func TestRetryAfterIsBounded(t *testing.T) {
	for v, want := range map[string]time.Duration{
		"7":                             7 * time.Second,
		"99999999999999":                maxRetryAfter,
		"9223372036854775807":           maxRetryAfter,
		"-5":                            0,
		"Fri, 31 Dec 9999 23:59:59 GMT": maxRetryAfter,
	} {
		if got := retryAfter(v); got != want {
			t.Errorf("retryAfter(%q) = %v, want %v", v, got, want)
		}
	}
}

func TestCheckEndpointURLRefusesMetadataForms(t *testing.T) {
	for raw, ok := range map[string]bool{
		"https://[fd00:ec2::254]/latest":       false, // AWS IMDS over IPv6
		"https://100.100.100.200/latest":       false, // Alibaba metadata
		"https://[::ffff:169.254.169.254]/":    false, // IPv4-mapped
		"https://[::ffff:100.100.100.200]/":    false,
		"https://[::169.254.169.254]/":         false, // IPv4-compatible
		"https://[::100.100.100.200]/":         false,
		"https://[2002:a9fe:a9fe::1]/":         false, // 6to4 of 169.254.169.254
		"https://[2002:6464:64c8::]/":          false, // 6to4 of 100.100.100.200
		"https://[64:ff9b::169.254.169.254]/":  false, // NAT64
		"https://[64:ff9b::a9fe:a9fe]/":        false,
		"https://[64:ff9b::100.100.100.200]/":  false,
		"https://[::ffff:0:169.254.169.254]/":  false, // SIIT IPv4-translated
		"https://[fe80::1%25eth0]/":            false,
		"https://169.254.169.254./":            false, // trailing dot
		"https://0xa9fea9fe/":                  false, // inet_aton forms
		"https://2852039166/":                  false,
		"https://0251.0376.0251.0376/":         false,
		"https://169.254.43518/":               false,
		"https://idp.example.com/#":            false, // empty fragment
		"https://:":                            false, // empty host (found by FuzzCheckEndpointURL)
		"https://:443/token":                   false,
		"https://[2002:0a01:0203::1]/token":    true, // 6to4 of 10.1.2.3
		"https://[64:ff9b::10.1.2.3]/token":    true,
		"https://[fd00:ec2::253]/token":        true,
		"https://100.100.100.201/token":        true,
		"https://10.1.2.3/token":               true,
		"https://[2001:db8::1]/token":          true,
		"https://idp.example.com/token":        true,
		"https://123.example.com/token":        true,
		"http://[::1]/token":                   true,
		"http://[::ffff:127.0.0.1]:8080/token": true,
	} {
		if err := CheckEndpointURL(raw); (err == nil) != ok {
			t.Errorf("%s: err = %v, want ok=%v", raw, err, ok)
		}
	}
}

func TestDialRefusesMetadataForms(t *testing.T) {
	for addr, refused := range map[string]bool{
		"[fd00:ec2::254]:80":             true,
		"100.100.100.200:80":             true,
		"[::169.254.169.254]:80":         true,
		"[::ffff:100.100.100.200]:80":    true,
		"[2002:a9fe:a9fe::1]:443":        true,
		"[64:ff9b::a9fe:a9fe]:443":       true,
		"[64:ff9b::100.100.100.200]:443": true,
		"[2002:0a01:0203::1]:443":        false,
		"[::1]:443":                      false,
		"[2001:db8::1]:443":              false,
	} {
		err := refuseForbiddenAddrs("tcp", addr, nil)
		if (err != nil) != refused {
			t.Errorf("%s: err = %v, want refused=%v", addr, err, refused)
		}
	}
}

// A proxy must not become a way around the address policy: the dial-time
// check only sees the proxy's own address.
func TestProxyAppliesEndpointPolicy(t *testing.T) {
	var hits atomic.Int32
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"access_token":"at"}`)
	}))
	defer proxy.Close()
	proxyURL, _ := url.Parse(proxy.URL)
	lookup := func(_ context.Context, _, host string) ([]netip.Addr, error) {
		switch host {
		case "metadata.test":
			return []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("169.254.169.254")}, nil
		case "imds6.test":
			return []netip.Addr{netip.MustParseAddr("fd00:ec2::254")}, nil
		case "idp.test":
			return []netip.Addr{netip.MustParseAddr("192.0.2.10")}, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	hc, err := newHTTPClient("", 2*time.Second, http.ProxyURL(proxyURL), lookup)
	if err != nil {
		t.Fatal(err)
	}
	for target, allowed := range map[string]bool{
		"http://192.0.2.10/token":         true,
		"http://idp.test/token":           true,
		"http://169.254.169.254/latest":   false,
		"http://100.100.100.200/latest":   false,
		"http://[fd00:ec2::254]/latest":   false,
		"http://[64:ff9b::a9fe:a9fe]/x":   false,
		"http://metadata.test/latest":     false,
		"http://imds6.test/latest":        false,
		"http://unresolvable.test/latest": false,
		"http://0xa9fea9fe/latest":        false,
	} {
		t.Run(target, func(t *testing.T) {
			before := hits.Load()
			c, err := New(Config{Endpoints: Endpoints{Token: target}, ClientID: "c", AuthMethod: AuthNone, HTTPClient: hc})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.ClientCredentials(context.Background(), TokenOptions{})
			reached := hits.Load() != before
			if allowed {
				if err != nil || !reached {
					t.Fatalf("allowed target: err = %v, reached proxy = %v", err, reached)
				}
				return
			}
			if err == nil || reached {
				t.Fatalf("forbidden target went through the proxy: err = %v, reached proxy = %v", err, reached)
			}
			if !strings.Contains(err.Error(), "refus") {
				t.Fatalf("err = %v, want a refusal", err)
			}
		})
	}
}

// NewHTTPClient takes its proxy from the environment and checks the target
// before using it. ProxyFromEnvironment reads the environment once per
// process, so the check runs in a child process with HTTP_PROXY set.
func TestEnvironmentProxyIsChecked(t *testing.T) {
	if os.Getenv("OAUTHCLIENT_PROXY_CHILD") != "" {
		hc, err := NewHTTPClient("", 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for target, allowed := range map[string]bool{"http://192.0.2.10/token": true, "http://169.254.169.254/latest": false} {
			c, err := New(Config{Endpoints: Endpoints{Token: target}, ClientID: "c", AuthMethod: AuthNone, HTTPClient: hc})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.ClientCredentials(context.Background(), TokenOptions{})
			if allowed && err != nil {
				t.Fatalf("%s through the environment proxy: %v", target, err)
			}
			if !allowed && (err == nil || !strings.Contains(err.Error(), "refus")) {
				t.Fatalf("%s through the environment proxy: err = %v, want a refusal", target, err)
			}
		}
		return
	}
	var hits atomic.Int32
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"access_token":"at"}`)
	}))
	defer proxy.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestEnvironmentProxyIsChecked$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "OAUTHCLIENT_PROXY_CHILD=1", "HTTP_PROXY="+proxy.URL, "http_proxy="+proxy.URL,
		"HTTPS_PROXY=", "https_proxy=", "NO_PROXY=", "no_proxy=", "REQUEST_METHOD=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "--- PASS: TestEnvironmentProxyIsChecked") {
		t.Fatalf("child did not run the test:\n%s", out)
	}
	if hits.Load() != 1 {
		t.Fatalf("proxy reached %d times, want 1 (the allowed target only)", hits.Load())
	}
}

// A partial echo in an escaping no form foresees (a piece of an adversarial
// VSCHAR secret, JSON-escaped and then Go-quoted) is withheld.
func TestPartialEchoInAnyEscapingIsWithheld(t *testing.T) {
	secret := `Zq8"vX\pL2 m<Kw&9rTb"Y7\nHs4 j<Ua&3`
	piece := secret[3:22]
	js, _ := json.Marshal(piece)
	for _, desc := range []string{
		"bad token " + piece,
		"bad token " + strconv.Quote(string(js)),
		"bad token " + url.QueryEscape(piece),
		"bad token " + html.EscapeString(piece),
		"bad token " + strings.ToLower(piece),
	} {
		out := scrub(desc, []string{secret}, maxDescription)
		if overlaps(out, secretWindows([]string{secret})) {
			t.Errorf("scrub(%q) = %q keeps a piece of the secret", desc, out)
		}
	}
	// Prose is kept.
	if out := scrub("The refresh token is invalid or expired", []string{secret}, maxDescription); out != "The refresh token is invalid or expired" {
		t.Errorf("prose changed: %q", out)
	}
}
