package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"html"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/tests/harness"
)

// TestNoSecretInAnyEncoding runs the engine against a hostile upstream (a
// local httptest server) that answers every token, revocation,
// introspection, device authorization and device poll request with an error
// that echoes the request's secrets (refresh token, access/subject token,
// client secret, the HTTP Basic header, private_key_jwt client assertion,
// authorization code, PKCE verifier, device code) in many encodings: raw,
// URL query/path escaped, four base64 alphabets, hex, JSON-escaped (Go with
// and without HTML escaping, "\/", every character \u-escaped), HTML and
// 16-character pieces. The echoes go out as HTTP 400/401/429/503 JSON, HTTP
// 200 with {"error":...}, Slack-style {"ok":false}, form-encoded bodies, an
// error code that is itself a secret, HTML 500 pages, 302 redirects whose
// Location carries them, and raw responses with a malformed status line or
// header line (which Go's own transport errors quote).
//
// It drives every flow that sends a secret (imports and creds reads, code
// exchanges, the authorize/callback flow, token exchange, client
// credentials leases renewed with verify_on_renew and revoked, strict_scopes
// refusals, grant deletion, replaced-token revocation by the sweep,
// keep_alive refreshes, device flows, tidy), then looks for every secret in
// every form (and 16/20-character pieces of it) in each response and error
// the test received, the Vault server log (trace level), the HMAC'ing audit
// log and a raw (log_raw=true) audit log outside the operator's request
// bodies.
//
// Positive controls: the echo server records what it sent, and the same
// matcher must find every echoed secret in that transcript; for each
// test-driven kind of request, every (secret kind/class, encoding) item has
// been placed, at least once, in the first items of an error_description of
// an error shape the engine surfaces (so an unscrubbed copy would be inside
// the engine's 200-character cut).
func TestNoSecretInAnyEncoding(t *testing.T) {
	began := time.Now()
	book := newSecretBook()
	echo := newEchoUpstream(t, book)
	v := harness.StartVault(t)
	rawAudit := t.TempDir() + "/audit-raw.log"
	v.MustCLI(t, "audit", "enable", "-path=raw", "file", "file_path="+rawAudit, "log_raw=true")
	rec := &responseLog{}
	c := v.Client

	redirect := v.Addr + "/v1/oauth/callback"
	rec.call("write config", nil)(c.Logical().Write("oauth/config", map[string]any{
		"tidy_interval": "5s", "upstream_timeout": "5s", "redirect_uri": redirect,
	}))

	// --- providers -------------------------------------------------------
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pemText := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	book.add("private_key_pem", "rsa", pemText, false, false)
	book.add("private_key_der_b64", "rsa", base64.StdEncoding.EncodeToString(der), false, false)
	for i, line := range strings.Split(strings.TrimSpace(pemText), "\n") {
		if !strings.HasPrefix(line, "-----") && len(line) >= 16 {
			book.add("private_key_line", fmt.Sprintf("rsa#%d", i), line, false, false)
		}
	}

	type provider struct {
		short, name, clientID, secret string
	}
	providers := []provider{
		{short: "basic", secret: genSecret(t, "typical")},
		{short: "basicvs", secret: genSecret(t, "vschar")},
		{short: "post", secret: genSecret(t, "vschar")},
		{short: "jwt"},
	}
	for i := range providers {
		p := &providers[i]
		p.name, p.clientID = "echo-"+p.short, "vault-echo-"+p.short
		base := echo.srv.URL + "/" + p.short
		data := map[string]any{
			"client_id":                p.clientID,
			"token_url":                base + "/token",
			"revocation_url":           base + "/revoke",
			"introspection_url":        base + "/introspect",
			"device_authorization_url": base + "/device",
			"authorization_url":        base + "/authorize",
			"revocation_cascades":      false,
			// In query mode the code travels in the callback's URL, which
			// Vault's audit log records as request_uri (docs/security.md);
			// form_post makes it request data, which audit HMACs.
			"response_mode": "form_post",
		}
		switch p.short {
		case "basic", "basicvs":
			data["client_auth"], data["client_secret"] = "client_secret_basic", p.secret
			cls := "typical"
			if p.short == "basicvs" {
				cls = "vschar"
			}
			book.add("client_secret", cls+"@"+p.short, p.secret, true, true)
			// What RFC 6749 §2.3.1 puts in the Authorization header.
			basic := base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(p.clientID) + ":" + url.QueryEscape(p.secret)))
			book.add("basic_auth", p.short, basic, false, false)
		case "post":
			data["client_auth"], data["client_secret"] = "client_secret_post", p.secret
			book.add("client_secret", "vschar@post", p.secret, true, true)
		case "jwt":
			data["client_auth"], data["client_private_key"], data["client_key_id"] = "private_key_jwt", pemText, "echo-k1"
		}
		if _, err := rec.call("write provider "+p.name, nil)(c.Logical().Write("oauth/providers/"+p.name, data)); err != nil {
			t.Fatalf("provider %s: %v", p.name, err)
		}
	}

	// --- grants and roles that live through the run ------------------------
	for pi, p := range providers {
		// The import the operator types, through the real CLI (stdin).
		rt := genSecret(t, classes[pi%len(classes)])
		book.add("refresh_token", classes[pi%len(classes)], rt, true, true)
		out, err := v.CLIWithStdin(t, rt, "write", "-format=json", "oauth/grants/r-"+p.short, "provider="+p.name, "refresh_token=-")
		rec.add("cli import r-"+p.short, out, nil)
		if err != nil {
			t.Fatalf("import: %v", err)
		}
		recWrite(t, rec, c, "oauth/roles/r-"+p.short, map[string]any{"grant": "r-" + p.short})
		recWrite(t, rec, c, "oauth/roles/cc-"+p.short, map[string]any{
			"grant_type": "client_credentials", "provider": p.name, "scopes": "ok", "verify_on_renew": true, "ttl": "10m"})
		recWrite(t, rec, c, "oauth/roles/ccx-"+p.short, map[string]any{
			"grant_type": "client_credentials", "provider": p.name, "scopes": "okx"})
		// A grant whose refresh token the echo upstream honours: its
		// token_exchange role refreshes it, then the exchange is echoed.
		good := genSecret(t, "typical")
		book.add("refresh_token", "typical", good, true, true)
		echo.allowRefresh(good)
		recWrite(t, rec, c, "oauth/grants/tx-"+p.short, map[string]any{"provider": p.name, "refresh_token": good})
		recWrite(t, rec, c, "oauth/roles/tx-"+p.short, map[string]any{"grant_type": "token_exchange", "grant": "tx-" + p.short})
		// Background refreshes (keep_alive) that the echo upstream refuses.
		ka := genSecret(t, "typical")
		book.add("refresh_token", "typical", ka, true, true)
		recWrite(t, rec, c, "oauth/grants/ka-"+p.short, map[string]any{"provider": p.name, "refresh_token": ka, "keep_alive": "1s"})
		// Device flows: every other device authorization request is echoed,
		// the others start a flow whose polls are echoed (sweep-driven).
		for k := 0; k < 2; k++ {
			name := fmt.Sprintf("oauth/grants/dv-%s-%d/device", p.short, k)
			for attempt := 0; attempt < 2; attempt++ {
				if _, err := rec.call("device "+name, nil)(c.Logical().Write(name, map[string]any{"provider": p.name, "scopes": "offline_access"})); err == nil {
					break
				}
			}
		}
	}

	// --- the test-driven loop ----------------------------------------------
	httpc := &http.Client{Timeout: 30 * time.Second}
	iterations := 0
	for i := 0; i < 30; i++ {
		iterations++
		for pi, p := range providers {
			class := classes[(i+pi)%len(classes)]
			tag := fmt.Sprintf("%s-%d", p.short, i)

			// Import a refresh token, then a creds read refreshes it (echoed).
			rt := genSecret(t, class)
			book.add("refresh_token", class, rt, true, true)
			rec.call("re-import r-"+p.short, nil)(c.Logical().Write("oauth/grants/r-"+p.short, map[string]any{"refresh_token": rt}))
			rec.call("creds r-"+p.short, nil)(c.Logical().Read("oauth/creds/r-" + p.short))
			rec.call("read grant r-"+p.short, nil)(c.Logical().Read("oauth/grants/r-" + p.short))

			// Code exchange (echoed): code and PKCE verifier.
			code := genSecret(t, class)
			book.add("code", class, code, true, true)
			vclass := verifierClasses[(i+pi)%len(verifierClasses)]
			verifier := genSecret(t, vclass)
			book.add("code_verifier", vclass, verifier, true, true)
			rec.call("code exchange c-"+tag, nil)(c.Logical().Write("oauth/grants/c-"+tag, map[string]any{
				"provider": p.name, "code": code, "redirect_uri": "http://127.0.0.1/cb", "code_verifier": verifier}))

			// Delete a grant: its revocation is echoed; last_error; then force.
			drt := genSecret(t, class)
			book.add("refresh_token", class, drt, true, true)
			if _, err := rec.call("create d-"+tag, nil)(c.Logical().Write("oauth/grants/d-"+tag, map[string]any{"provider": p.name, "refresh_token": drt})); err == nil {
				rec.call("delete d-"+tag, nil)(c.Logical().Delete("oauth/grants/d-" + tag))
				rec.call("read d-"+tag, nil)(c.Logical().Read("oauth/grants/d-" + tag))
				rec.call("force delete d-"+tag, nil)(c.Logical().DeleteWithData("oauth/grants/d-"+tag, map[string][]string{"force": {"true"}}))
			}

			// client_credentials: the token is issued; renewal introspects it
			// (echoed) and a sync revocation revokes it (echoed).
			if s, err := c.Logical().Read("oauth/creds/cc-" + p.short); err != nil {
				rec.add("creds cc-"+p.short, err.Error(), nil)
			} else {
				at, _ := s.Data["access_token"].(string)
				rec.addSecret("creds cc-"+p.short, s, []string{at})
				rec.call("renew cc-"+p.short, nil)(c.Sys().Renew(s.LeaseID, 0))
				rec.err("revoke -sync cc-"+p.short, c.Sys().RevokeWithOptions(&api.RevokeOptions{LeaseID: s.LeaseID, Sync: true}))
			}
			// strict_scopes refuses the token; its revocation is echoed.
			if i%len(providers) == pi {
				rec.call("creds ccx-"+p.short, nil)(c.Logical().Read("oauth/creds/ccx-" + p.short))
			}
			// token_exchange: the refresh succeeds, the exchange is echoed,
			// the subject token's revocation is echoed.
			rec.call("creds tx-"+p.short, nil)(c.Logical().Read("oauth/creds/tx-" + p.short))

			// The authorize / callback flow: the engine's own PKCE verifier
			// and the browser's code are echoed at the code exchange.
			if s, err := rec.call("authorize cb-"+tag, nil)(c.Logical().Write("oauth/grants/cb-"+tag+"/authorize", map[string]any{
				"provider": p.name, "scopes": "offline_access"})); err == nil && s != nil {
				state, _ := s.Data["state"].(string)
				cbCode := genSecret(t, class)
				book.add("code", class, cbCode, true, true)
				q := url.Values{"state": {state}, "code": {cbCode}}
				resp, err := httpc.PostForm(redirect, q) // the browser posts the form_post page

				if err != nil {
					t.Fatalf("callback: %v", err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				rec.add(fmt.Sprintf("callback cb-%s (HTTP %d)", tag, resp.StatusCode), string(body), nil)
			}
		}
		if i >= len(classes) && len(echo.uncovered(drivenKinds)) == 0 {
			break
		}
	}
	coverageGaps := echo.uncovered(drivenKinds)

	// --- tidy, final reads, deletes ------------------------------------------
	rec.call("tidy", nil)(c.Logical().Write("oauth/tidy", nil))
	for _, p := range providers {
		rec.call("delete r-"+p.short, nil)(c.Logical().Delete("oauth/grants/r-" + p.short))
		rec.call("read r-"+p.short, nil)(c.Logical().Read("oauth/grants/r-" + p.short))
	}
	// Let the sweep poll the device flows to their end and retry the queued
	// revocations a few times.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && !echo.devicesDone(2*len(providers)) {
		time.Sleep(250 * time.Millisecond)
	}
	rec.call("tidy", nil)(c.Logical().Write("oauth/tidy", nil))
	rec.call("tidy status", nil)(c.Logical().Read("oauth/tidy/status"))
	if s, err := rec.call("list grants", nil)(c.Logical().List("oauth/grants")); err == nil && s != nil {
		keys, _ := s.Data["keys"].([]any)
		for _, k := range keys {
			rec.call("read grant "+fmt.Sprint(k), nil)(c.Logical().Read("oauth/grants/" + fmt.Sprint(k)))
		}
	}
	for _, p := range providers {
		rec.call("read provider "+p.name, nil)(c.Logical().Read("oauth/providers/" + p.name))
	}
	// The CLI's view of a grant with last_error, as an operator reads it.
	out, err := v.CLI(t, "read", "-format=json", "oauth/grants/ka-basic")
	rec.add("cli read ka-basic", out, nil)
	if err != nil {
		rec.add("cli read ka-basic error", err.Error(), nil)
	}

	// Stop Vault so that its log and the audit logs are complete.
	v.Stop(t)
	echo.stop()

	// SECRET_ENCODINGS_COPY_LOGS=DIR keeps copies of the logs for a look.
	if dir := os.Getenv("SECRET_ENCODINGS_COPY_LOGS"); dir != "" {
		for name, src := range map[string]string{"vault.log": v.LogPath, "audit.log": v.AuditLogPath, "audit-raw.log": rawAudit} {
			if data, err := os.ReadFile(src); err == nil {
				os.WriteFile(dir+"/"+name, data, 0o600)
			}
		}
	}

	// --- positive controls ---------------------------------------------------
	stats := echo.snapshot()
	t.Logf("%d loop iterations; echo upstream answered %d requests, %d of them echoing secrets", iterations, stats.requests, stats.totalEchoes)
	for _, k := range append(append([]string{}, drivenKinds...), backgroundKinds...) {
		t.Logf("  %-34s %4d echoes, %4d with a surfaced description shape, %3d/%3d (kind/class, encoding) items placed visibly",
			k, stats.echoes[k], stats.surfacing[k], stats.coveredByKind[k], stats.seenByKind[k])
	}
	for _, k := range drivenKinds {
		if stats.echoes[k] == 0 {
			t.Errorf("positive control: the echo upstream never echoed at %s; the scenario does not reach it", k)
		}
	}
	for _, k := range []string{"token:device_code", "device_authorization", "revocation:refresh_token"} {
		if stats.echoes[k] == 0 {
			t.Errorf("positive control: no echo at %s", k)
		}
	}
	if len(coverageGaps) > 0 {
		sort.Strings(coverageGaps)
		t.Errorf("positive control: after %d iterations these items were never placed where the engine would show them: %v", iterations, coverageGaps)
	}
	for _, p := range providers {
		if p.short == "basic" || p.short == "basicvs" {
			want := base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(p.clientID) + ":" + url.QueryEscape(p.secret)))
			if !echo.sawValue("basic_auth", want) {
				t.Errorf("positive control: the echo upstream never received the expected Basic header of %s", p.name)
			}
		}
	}
	echoedKinds := map[string]bool{}
	for _, s := range book.all() {
		if s.echoed {
			echoedKinds[s.kind] = true
		}
	}
	for _, k := range []string{"refresh_token", "access_token", "client_secret", "basic_auth", "client_assertion", "assertion_signature", "code", "code_verifier", "device_code"} {
		if !echoedKinds[k] {
			t.Errorf("positive control: no %s was ever echoed", k)
		}
	}

	m := newMatcher(book.all())
	t.Logf("searching for %d secrets in %d forms", len(book.all()), len(m.needles))
	// The matcher must find every echoed secret in what the echo sent.
	found := map[*secretInfo]bool{}
	for _, tr := range stats.transcript {
		for _, h := range m.find(tr) {
			found[h.n.s] = true
		}
	}
	missed := 0
	for _, s := range book.all() {
		if s.echoed && !found[s] {
			missed++
			if missed <= 5 {
				t.Errorf("positive control: %s/%s was echoed but the matcher cannot find it in the echo transcript", s.kind, s.class)
			}
		}
	}
	if missed > 0 {
		t.Errorf("positive control: %d echoed secrets not found in the echo transcript", missed)
	}
	markers := 0
	for _, r := range rec.snapshot() {
		markers += strings.Count(r.text, "echo#")
	}
	if vlog, err := os.ReadFile(v.LogPath); err == nil {
		t.Logf("echo descriptions that reached the client: %d; the Vault log: %d; Vault log %d bytes",
			markers, bytes.Count(vlog, []byte("echo#")), len(vlog))
	}

	// --- the search ----------------------------------------------------------
	leaks := &leakReport{}
	for _, r := range rec.snapshot() {
		allowed := map[*secretInfo]bool{}
		for _, a := range r.allowed {
			if s := book.get(a); s != nil {
				allowed[s] = true
			}
		}
		for _, h := range maximal(m.find(r.text)) {
			if !allowed[h.n.s] {
				leaks.add("a response or error the client got", r.label, h, m.excerpt(r.text, h))
			}
		}
	}
	scanFileLines(t, m, leaks, "vault server log", v.LogPath)
	scanFileLines(t, m, leaks, "audit log (log_raw=false)", v.AuditLogPath)
	scanRawAudit(t, m, leaks, rawAudit)

	t.Logf("runtime %s", time.Since(began).Round(100*time.Millisecond))
	leaks.report(t)
}

// ---------------------------------------------------------------------------
// Secrets

var (
	classes         = []string{"typical", "vschar", "dotted", "jwt"}
	verifierClasses = []string{"typical", "dotted"} // RFC 7636: unreserved characters only
)

// genSecret returns a random secret of a class:
//   - typical: "ghr_" and 40 base64url characters, like GitHub's tokens;
//   - vschar: 40 characters of RFC 6749's VSCHAR (%x20-7E), with space, ",
//     \, <, &, /, +, %, ! and * always among them;
//   - dotted: lower-case labels and dots (valid even as a PKCE verifier);
//   - jwt: three base64url segments, like a JWT access token.
func genSecret(t testing.TB, class string) string {
	t.Helper()
	switch class {
	case "typical":
		// GitHub-style: a short prefix, then base64url characters.
		return "ghr_" + base64.RawURLEncoding.EncodeToString(randBytes(t, 30))
	case "vschar":
		b := []byte(randFrom(t, vschar, 40))
		for i, c := range []byte(` "\<&/+%!*`) {
			b[3+4*i] = c
		}
		if b[0] == ' ' {
			b[0] = 'V'
		}
		if b[len(b)-1] == ' ' {
			b[len(b)-1] = 'v'
		}
		return string(b)
	case "dotted":
		var labels []string
		for total, i := 0, 0; total < 48; i++ {
			n := 4 + int(randBytes(t, 1)[0]%6)
			alphabet := lowerAlpha
			if i%2 == 1 {
				alphabet = lowerAlpha + "0123456789"
			}
			labels = append(labels, randFrom(t, alphabet, n))
			total += n + 1
		}
		if strings.ContainsAny(labels[len(labels)-1], "0123456789") {
			labels = append(labels, randFrom(t, lowerAlpha, 6))
		}
		return strings.Join(labels, ".")
	case "jwt":
		b64 := base64.RawURLEncoding.EncodeToString
		return b64([]byte(`{"kid":"`+randFrom(t, alnum, 12)+`","alg":"RS256","typ":"JWT"}`)) + "." +
			b64([]byte(`{"jti":"`+randFrom(t, alnum, 16)+`","sub":"alice","exp":1999999999}`)) + "." +
			b64(randBytes(t, 64))
	}
	t.Fatalf("genSecret: unknown class %q", class)
	return ""
}

const (
	lowerAlpha = "abcdefghijklmnopqrstuvwxyz"
	alnum      = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	vschar     = " !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~"
)

func randBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func randFrom(t testing.TB, alphabet string, n int) string {
	b := make([]byte, n)
	for i := range b {
		k, err := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		if err != nil {
			t.Fatal(err)
		}
		b[i] = alphabet[k.Int64()]
	}
	return string(b)
}

// secretInfo is one secret value the scenario handles.
type secretInfo struct {
	kind  string // refresh_token, access_token, client_secret, code, ...
	class string // typical, vschar, dotted, jwt, engine, ...
	value string
	// substrings: look for (and echo) 16-character pieces of it too;
	// prefixes: look for the first 20 characters of its longer encodings.
	// Off for values with a constant prefix (PEM, JWT client assertion,
	// Basic header), which are searched whole.
	substrings, prefixes bool
	echoed               bool // the echo upstream put it in an answer
}

func (s *secretInfo) label() string { return s.kind + "/" + s.class }

type secretBook struct {
	mu      sync.Mutex
	byValue map[string]*secretInfo
	list    []*secretInfo
}

func newSecretBook() *secretBook { return &secretBook{byValue: map[string]*secretInfo{}} }

// add registers a secret; a value already known keeps its first label.
func (b *secretBook) add(kind, class, value string, substrings, prefixes bool) *secretInfo {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s, ok := b.byValue[value]; ok {
		return s
	}
	s := &secretInfo{kind: kind, class: class, value: value, substrings: substrings, prefixes: prefixes}
	b.byValue[value] = s
	b.list = append(b.list, s)
	return s
}

func (b *secretBook) get(value string) *secretInfo {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.byValue[value]
}

func (b *secretBook) markEchoed(s *secretInfo) {
	b.mu.Lock()
	s.echoed = true
	b.mu.Unlock()
}

func (b *secretBook) all() []*secretInfo {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]*secretInfo, len(b.list))
	copy(out, b.list)
	return out
}

type form struct{ enc, value string }

// encodedForms: every encoding the test echoes and searches for.
func encodedForms(v string) []form {
	q, p := url.QueryEscape(v), url.PathEscape(v)
	b := []byte(v)
	fs := []form{
		{"raw", v},
		{"url.QueryEscape", q},
		{"url.PathEscape", p},
		{"QueryEscape-lowerhex", lowerPercent(q)},
		{"base64.Std", base64.StdEncoding.EncodeToString(b)},
		{"base64.URL", base64.URLEncoding.EncodeToString(b)},
		{"base64.RawStd", base64.RawStdEncoding.EncodeToString(b)},
		{"base64.RawURL", base64.RawURLEncoding.EncodeToString(b)},
		{"hex", hex.EncodeToString(b)},
		{"HEX", strings.ToUpper(hex.EncodeToString(b))},
		{"json", jsonEscaped(v, true)},
		{"json-noHTML", jsonEscaped(v, false)},
		{`json-\/`, strings.ReplaceAll(jsonEscaped(v, false), "/", `\/`)},
		{`json-\u-all`, allUnicodeEscaped(v, "%04x")},
		{`json-\U-all`, allUnicodeEscaped(v, "%04X")},
		{"html", html.EscapeString(v)},
	}
	seen := map[string]bool{}
	out := fs[:0]
	for _, f := range fs {
		if !seen[f.value] {
			seen[f.value] = true
			out = append(out, f)
		}
	}
	return out
}

// pieces are 16-character substrings of v at a few offsets.
func pieces(v string) []form {
	if len(v) < 24 {
		return nil
	}
	var out []form
	seen := map[int]bool{}
	for _, at := range []struct {
		name string
		off  int
	}{{"start", 0}, {"1/3", len(v) / 3}, {"1/2", len(v) / 2}, {"end", len(v) - 16}} {
		if !seen[at.off] {
			seen[at.off] = true
			out = append(out, form{"16-char piece at " + at.name, v[at.off : at.off+16]})
		}
	}
	return out
}

// echoForms is what the echo upstream puts in its answers for s.
func echoForms(s *secretInfo) []form {
	fs := encodedForms(s.value)
	if s.kind == "basic_auth" {
		fs = append(fs, form{"Authorization header", "Basic " + s.value})
	}
	if s.substrings {
		fs = append(fs, pieces(s.value)...)
	}
	return fs
}

// needleForms is what the search looks for: the echo forms plus the first
// 20 characters of the longer encodings (a cut copy) and, for the Basic
// header, its last 20 characters (which encode the client secret's end).
func needleForms(s *secretInfo) []form {
	fs := echoForms(s)
	// Any form (and piece) as JSON or Go's %q quote it, once or twice: an
	// error that quotes upstream bytes, then a log line or an audit entry
	// that quotes that error.
	var quoted []form
	for _, f := range fs {
		quoted = append(quoted, quotings(f)...)
	}
	fs = append(fs, quoted...)
	if s.prefixes {
		for _, f := range encodedForms(s.value) {
			if strings.HasPrefix(f.enc, `json-\`) || len(f.value) < 28 {
				continue // \u-escaped: 20 characters are only ~3 of the secret
			}
			fs = append(fs, form{f.enc + " (first 20 chars)", f.value[:20]})
		}
	}
	if s.kind == "basic_auth" && len(s.value) > 28 {
		fs = append(fs, form{"Basic header value (last 20 chars)", s.value[len(s.value)-20:]})
	}
	return fs
}

// quotings returns f quoted once and twice, as JSON (HTML-escaping) and as
// Go's %q / JSON without HTML escaping write printable ASCII. Different
// chains can give the same string; the search keeps the first name.
func quotings(f form) []form {
	var out []form
	seen := map[string]bool{f.value: true}
	add := func(enc, v string) {
		if !seen[v] {
			seen[v] = true
			out = append(out, form{f.enc + " (" + enc + ")", v})
		}
	}
	q, qh := jsonEscaped(f.value, false), jsonEscaped(f.value, true)
	add("quoted", q)
	add("json-quoted", qh)
	add("quoted twice", jsonEscaped(q, false))
	add("json-quoted twice", jsonEscaped(qh, true))
	add("quoted, then json-quoted", jsonEscaped(q, true)) // %q, then Vault's JSON
	add("json-quoted, then quoted", jsonEscaped(qh, false))
	return out
}

func lowerPercent(s string) string {
	b := []byte(s)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' {
			b[i+1], b[i+2] = bytes.ToLower(b[i+1 : i+2])[0], bytes.ToLower(b[i+2 : i+3])[0]
		}
	}
	return string(b)
}

func jsonEscaped(v string, escapeHTML bool) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(escapeHTML)
	_ = enc.Encode(v)
	s := strings.TrimSpace(b.String())
	return s[1 : len(s)-1]
}

func allUnicodeEscaped(v, format string) string {
	var b strings.Builder
	for _, r := range v {
		fmt.Fprintf(&b, `\u`+format, r)
	}
	return b.String()
}

// ---------------------------------------------------------------------------
// The echo upstream

// Kinds of upstream request the test drives itself (and whose coverage it
// asserts), and kinds only the background sweep sends (reported).
var (
	drivenKinds = []string{
		"token:refresh_token", "token:authorization_code", "token:token-exchange",
		"revocation:access_token", "introspection",
	}
	backgroundKinds = []string{"revocation:refresh_token", "token:device_code", "device_authorization"}
)

type echoVariant struct {
	name   string
	code   string
	status int
	// surfaces: an OAuth error whose description the engine is documented
	// to pass on (scrubbed).
	surfaces bool
}

var echoVariants = []echoVariant{
	{"json400", "invalid_request", 400, true},
	{"json200", "server_error", 200, true},
	{"html500", "", 500, false},
	{"json401", "invalid_client", 401, true},
	{"form400", "invalid_request", 400, true},
	{"redirect302", "", 302, false},
	{"slack200", "invalid_auth", 200, true},
	{"secret-as-error-code", "", 400, false},
	{"malformed-status-line", "", 0, false},
	{"json400-invalid_grant", "invalid_grant", 400, true},
	{"malformed-header-line", "", 0, false},
	{"json429", "temporarily_unavailable", 429, false},
	{"json503", "temporarily_unavailable", 503, true},
}

// echoWindow is how many echo items go first in a description: with every
// earlier one scrubbed to "[redacted]", an unscrubbed item still starts well
// inside the engine's 200-character cut.
const echoWindow = 10

type echoItem struct {
	key, value string
	s          *secretInfo
}

type echoUpstream struct {
	t        *testing.T
	srv      *httptest.Server
	book     *secretBook
	stopOnce sync.Once

	mu           sync.Mutex
	requests     int
	good         map[string]bool // refresh tokens that refresh
	counter      map[string]int
	echoes       map[string]int
	surfacing    map[string]int
	seen         map[string]bool
	covered      map[string]bool
	usedAsCode   map[string]bool
	received     map[string]map[string]bool
	marker       int
	transcript   []string
	deviceStarts map[string]int
	devicePolls  map[string]int
	devicesEnded int
	issued       int
}

func newEchoUpstream(t *testing.T, book *secretBook) *echoUpstream {
	e := &echoUpstream{
		t: t, book: book,
		good: map[string]bool{}, counter: map[string]int{}, echoes: map[string]int{}, surfacing: map[string]int{},
		seen: map[string]bool{}, covered: map[string]bool{}, received: map[string]map[string]bool{}, usedAsCode: map[string]bool{},
		deviceStarts: map[string]int{}, devicePolls: map[string]int{},
	}
	e.srv = httptest.NewServer(e)
	t.Cleanup(e.stop)
	return e
}

func (e *echoUpstream) stop() {
	e.stopOnce.Do(func() {
		e.srv.CloseClientConnections()
		e.srv.Close()
	})
}

func (e *echoUpstream) allowRefresh(rt string) {
	e.mu.Lock()
	e.good[rt] = true
	e.mu.Unlock()
}

func (e *echoUpstream) devicesDone(n int) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.devicesEnded >= n
}

func (e *echoUpstream) recordReceived(kind, value string) {
	if e.received[kind] == nil {
		e.received[kind] = map[string]bool{}
	}
	e.received[kind][value] = true
}

func (e *echoUpstream) sawValue(kind, value string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.received[kind][value]
}

// uncovered lists the items of the given kinds that were in a request but
// never placed visibly in a surfacing error.
func (e *echoUpstream) uncovered(kinds []string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for k := range e.seen {
		for _, kind := range kinds {
			if strings.HasPrefix(k, kind+"|") && !e.covered[k] {
				out = append(out, k)
			}
		}
	}
	return out
}

type echoStats struct {
	requests, totalEchoes     int
	echoes, surfacing         map[string]int
	seenByKind, coveredByKind map[string]int
	transcript                []string
}

func (e *echoUpstream) snapshot() echoStats {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := echoStats{requests: e.requests, echoes: map[string]int{}, surfacing: map[string]int{},
		seenByKind: map[string]int{}, coveredByKind: map[string]int{}, transcript: append([]string(nil), e.transcript...)}
	for k, n := range e.echoes {
		st.echoes[k] = n
		st.totalEchoes += n
	}
	for k, n := range e.surfacing {
		st.surfacing[k] = n
	}
	for k := range e.seen {
		kind := k[:strings.Index(k, "|")]
		st.seenByKind[kind]++
		if e.covered[k] {
			st.coveredByKind[kind]++
		}
	}
	return st
}

// requestSecrets returns the secrets a request carries, registering the
// ones the test did not create (engine-made verifiers and assertions,
// tokens the echo upstream issued).
func (e *echoUpstream) requestSecrets(r *http.Request, prov string) []*secretInfo {
	var out []*secretInfo
	add := func(kind, class, v string, substrings, prefixes bool) {
		if v == "" {
			return
		}
		s := e.book.add(kind, class, v, substrings, prefixes)
		e.recordReceived(kind, v)
		out = append(out, s)
	}
	f := r.PostForm
	// The grant's secrets first, then the client's credentials.
	add("refresh_token", "unknown", f.Get("refresh_token"), true, true)
	add("code", "unknown", f.Get("code"), true, true)
	add("code_verifier", "engine", f.Get("code_verifier"), true, true)
	add("device_code", "unknown", f.Get("device_code"), true, true)
	add("access_token", "unknown", f.Get("subject_token"), true, true)
	if tok := f.Get("token"); tok != "" {
		kind := f.Get("token_type_hint")
		if kind == "" {
			kind = "token"
		}
		add(kind, "unknown", tok, true, true)
	}
	if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Basic ") {
		b := strings.TrimPrefix(h, "Basic ")
		add("basic_auth", prov, b, false, false)
		if raw, err := base64.StdEncoding.DecodeString(b); err == nil {
			if _, sec, ok := strings.Cut(string(raw), ":"); ok {
				if s, err := url.QueryUnescape(sec); err == nil {
					add("client_secret", "unknown@"+prov, s, true, true)
				}
			}
		}
	}
	add("client_secret", "unknown@"+prov, f.Get("client_secret"), true, true)
	if a := f.Get("client_assertion"); a != "" {
		add("client_assertion", "engine", a, false, false)
		if parts := strings.Split(a, "."); len(parts) == 3 {
			add("assertion_signature", "engine", parts[2], true, true)
		}
	}
	return out
}

func (e *echoUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if r.Method != http.MethodPost || len(parts) != 2 {
		http.NotFound(w, r)
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", 400)
		return
	}
	prov, endpoint := parts[0], parts[1]
	e.mu.Lock()
	defer e.mu.Unlock()
	e.requests++
	secrets := e.requestSecrets(r, prov)
	f := r.PostForm
	switch endpoint {
	case "token":
		gt := f.Get("grant_type")
		switch gt {
		case "client_credentials":
			scope := f.Get("scope")
			if strings.Contains(scope, "okx") {
				scope += " extra" // more than asked: strict_scopes refuses it
			}
			e.issue(w, scope, false)
			return
		case "refresh_token":
			if e.good[f.Get("refresh_token")] {
				e.issue(w, "", true)
				return
			}
		case "urn:ietf:params:oauth:grant-type:device_code":
			dc := f.Get("device_code")
			n := e.devicePolls[dc]
			e.devicePolls[dc]++
			switch {
			case n == 0:
				e.echo(w, "token:device_code", secrets, "authorization_pending")
			case n >= 6:
				e.devicesEnded++
				e.echo(w, "token:device_code", secrets, "access_denied")
			default:
				e.echo(w, "token:device_code", secrets, "")
			}
			return
		}
		short := gt
		if i := strings.LastIndex(gt, ":"); i >= 0 {
			short = gt[i+1:]
		}
		e.echo(w, "token:"+short, secrets, "")
	case "revoke":
		hint := f.Get("token_type_hint")
		if hint == "" {
			hint = "none"
		}
		e.echo(w, "revocation:"+hint, secrets, "")
	case "introspect":
		e.echo(w, "introspection", secrets, "")
	case "device":
		e.deviceStarts[prov]++
		if e.deviceStarts[prov]%2 == 1 {
			e.echo(w, "device_authorization", secrets, "")
			return
		}
		class := classes[e.issued%len(classes)]
		e.issued++
		dc := genSecret(e.t, class)
		e.book.add("device_code", class, dc, true, true)
		e.writeJSON(w, 200, map[string]any{
			"device_code": dc, "user_code": "WDJB-MJHT", "verification_uri": "http://127.0.0.1/device",
			"expires_in": 60, "interval": 1,
		})
	default:
		http.NotFound(w, r)
	}
}

// issue answers a token request with success: a new access token (and, for
// a refresh, a rotated refresh token the upstream keeps honouring).
func (e *echoUpstream) issue(w http.ResponseWriter, scope string, rotate bool) {
	class := classes[e.issued%len(classes)]
	e.issued++
	at := genSecret(e.t, class)
	e.book.add("access_token", class, at, true, true)
	body := map[string]any{"access_token": at, "token_type": "Bearer", "expires_in": 3600}
	if scope != "" {
		body["scope"] = scope
	}
	if rotate {
		rt := genSecret(e.t, class)
		e.book.add("refresh_token", class, rt, true, true)
		e.good[rt] = true
		body["refresh_token"] = rt
	}
	e.writeJSON(w, 200, body)
}

func (e *echoUpstream) writeJSON(w http.ResponseWriter, status int, body any) {
	data, _ := json.Marshal(body)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(data)
}

// echo answers with an error that carries the request's secrets. code, when
// set, is the OAuth error code to use (device polls).
func (e *echoUpstream) echo(w http.ResponseWriter, kind string, secrets []*secretInfo, code string) {
	var items []echoItem
	for _, s := range secrets {
		for _, f := range echoForms(s) {
			items = append(items, echoItem{key: kind + "|" + s.label() + "|" + f.enc, value: f.value, s: s})
		}
	}
	for _, it := range items {
		e.seen[it.key] = true
	}
	n := e.counter[kind]
	e.counter[kind]++
	v := echoVariants[n%len(echoVariants)]
	if code != "" {
		v = echoVariant{"json400", code, 400, false}
	}
	if kind == "token:authorization_code" && v.code == "invalid_grant" {
		v.surfaces = false // a rejected code gets a fixed message
	}
	// Items not yet shown visibly go first.
	var window []echoItem
	inWindow := map[string]bool{}
	for _, it := range items {
		if len(window) < echoWindow && !e.covered[it.key] && !inWindow[it.key] {
			window = append(window, it)
			inWindow[it.key] = true
		}
	}
	for j := 0; j < len(items) && len(window) < echoWindow; j++ {
		it := items[(n*echoWindow+j)%len(items)]
		if !inWindow[it.key] {
			window = append(window, it)
			inWindow[it.key] = true
		}
	}
	// The rest follows (cut by the engine, but sent).
	rest := make([]string, 0, len(items))
	for _, it := range items {
		if !inWindow[it.key] {
			rest = append(rest, it.value)
		}
	}
	if v.surfaces {
		for _, it := range window {
			e.covered[it.key] = true
		}
		e.surfacing[kind]++
	}
	e.echoes[kind]++
	e.marker++
	vals := make([]string, len(window))
	for i, it := range window {
		vals[i] = it.value
	}
	desc := fmt.Sprintf("echo#%d: %s", e.marker, strings.Join(append(vals, rest...), " | "))
	first := ""
	if len(vals) > 0 {
		first = vals[0]
	}
	if v.name == "secret-as-error-code" {
		// A piece of a secret not yet tried as an error code (starts first).
		pick := -1
		for pass := 0; pass < 2 && pick < 0; pass++ {
			for j, it := range items {
				if strings.Contains(it.key, "piece") && !e.usedAsCode[it.key] && (pass == 1 || strings.HasSuffix(it.key, "piece at start")) {
					pick = j
					break
				}
			}
		}
		if pick >= 0 {
			e.usedAsCode[items[pick].key] = true
			first = items[pick].value
			e.book.markEchoed(items[pick].s)
		}
	}
	// What this answer really carries (a malformed status line only the
	// first item), for the positive control.
	if v.name == "malformed-status-line" {
		if len(window) > 0 {
			e.book.markEchoed(window[0].s)
		}
	} else {
		for _, it := range items {
			e.book.markEchoed(it.s)
		}
	}

	var sent strings.Builder
	fmt.Fprintf(&sent, "%s %s ", kind, v.name)
	switch v.name {
	case "malformed-status-line", "malformed-header-line":
		raw := "HTTP/1.1 " + headerSafe(first) + " Bad\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
		if v.name == "malformed-header-line" {
			raw = "HTTP/1.1 400 Bad Request\r\n@" + headerSafe(desc) + "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
		}
		sent.WriteString(raw)
		e.transcript = append(e.transcript, sent.String())
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			e.t.Errorf("hijack: %v", err)
			return
		}
		buf.WriteString(raw)
		buf.Flush()
		conn.Close()
		return
	case "html500":
		w.Header().Set("Content-Type", "text/html")
		body := "<html><body><h1>Internal error</h1><pre>" + desc + "</pre></body></html>"
		fmt.Fprintf(&sent, "500 %s", body)
		e.transcript = append(e.transcript, sent.String())
		w.WriteHeader(500)
		io.WriteString(w, body)
		return
	case "redirect302":
		loc := "http://127.0.0.1:1/moved?d=" + url.QueryEscape(desc)
		w.Header().Set("Location", loc)
		fmt.Fprintf(&sent, "302 Location: %s", loc)
		e.transcript = append(e.transcript, sent.String())
		w.WriteHeader(302)
		return
	case "form400":
		body := "error=invalid_request&error_description=" + url.QueryEscape(desc)
		w.Header().Set("Content-Type", "application/x-www-form-urlencoded")
		fmt.Fprintf(&sent, "400 %s", body)
		e.transcript = append(e.transcript, sent.String())
		w.WriteHeader(400)
		io.WriteString(w, body)
		return
	}
	body := map[string]any{"error": v.code, "error_description": desc}
	switch v.name {
	case "slack200":
		body["ok"] = false
	case "secret-as-error-code":
		body["error"] = first
	case "json401":
		h := `Basic realm="echo", error_description="` + headerSafe(desc) + `"`
		w.Header().Set("WWW-Authenticate", h)
		fmt.Fprintf(&sent, "WWW-Authenticate: %s ", h)
	case "json429":
		w.Header().Set("Retry-After", headerSafe(first))
		fmt.Fprintf(&sent, "Retry-After: %s ", headerSafe(first))
	}
	data, _ := json.Marshal(body)
	fmt.Fprintf(&sent, "%d %s", v.status, data)
	e.transcript = append(e.transcript, sent.String())
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(v.status)
	w.Write(data)
}

func headerSafe(s string) string {
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
}

// ---------------------------------------------------------------------------
// What the test received

type response struct {
	label, text string
	allowed     []string // secret values this response legitimately carries
}

type responseLog struct {
	mu   sync.Mutex
	list []response
}

func (l *responseLog) add(label, text string, allowed []string) {
	l.mu.Lock()
	l.list = append(l.list, response{label, text, allowed})
	l.mu.Unlock()
}

func (l *responseLog) addSecret(label string, s *api.Secret, allowed []string) {
	if s == nil {
		return
	}
	data, _ := json.Marshal(s)
	l.add(label, string(data), allowed)
}

func (l *responseLog) err(label string, err error) {
	if err != nil {
		l.add(label+" (error)", err.Error(), nil)
	}
}

// call records an API call's response and error and passes them on.
func (l *responseLog) call(label string, allowed []string) func(*api.Secret, error) (*api.Secret, error) {
	return func(s *api.Secret, err error) (*api.Secret, error) {
		l.addSecret(label, s, allowed)
		l.err(label, err)
		return s, err
	}
}

func (l *responseLog) snapshot() []response {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]response(nil), l.list...)
}

func recWrite(t *testing.T, rec *responseLog, c *api.Client, path string, data map[string]any) {
	t.Helper()
	if _, err := rec.call("write "+path, nil)(c.Logical().Write(path, data)); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}

// ---------------------------------------------------------------------------
// The search

type needle struct {
	s     *secretInfo
	enc   string
	value string
}

// matcher finds many needles (all at least 16 bytes) in one pass: each
// needle is indexed by its first 16 bytes.
type matcher struct {
	needles []needle
	index   map[string][]int
}

const needleKey = 16

func newMatcher(secrets []*secretInfo) *matcher {
	m := &matcher{index: map[string][]int{}}
	seen := map[string]bool{}
	for _, s := range secrets {
		for _, f := range needleForms(s) {
			if len(f.value) < needleKey || seen[f.value] {
				continue
			}
			seen[f.value] = true
			m.index[f.value[:needleKey]] = append(m.index[f.value[:needleKey]], len(m.needles))
			m.needles = append(m.needles, needle{s, f.enc, f.value})
		}
	}
	return m
}

type hit struct {
	pos int
	n   *needle
}

func (m *matcher) find(text string) []hit {
	var hits []hit
	for i := 0; i+needleKey <= len(text); i++ {
		ids, ok := m.index[text[i:i+needleKey]]
		if !ok {
			continue
		}
		for _, id := range ids {
			if strings.HasPrefix(text[i:], m.needles[id].value) {
				hits = append(hits, hit{i, &m.needles[id]})
			}
		}
	}
	return hits
}

// maximal drops hits that lie inside another hit (a piece inside the
// whole secret, a prefix inside a full encoding).
func maximal(hits []hit) []hit {
	var out []hit
	for i, h := range hits {
		end := h.pos + len(h.n.value)
		inside := false
		for j, o := range hits {
			oend := o.pos + len(o.n.value)
			if i != j && o.pos <= h.pos && end <= oend && (oend-o.pos > end-h.pos || j < i) {
				inside = true
				break
			}
		}
		if !inside {
			out = append(out, h)
		}
	}
	return out
}

// mask replaces every secret form in text by «kind/class as encoding».
func (m *matcher) mask(text string) string {
	hits := m.find(text)
	var b strings.Builder
	pos := 0
	for i := 0; i < len(hits); i++ {
		h := hits[i]
		if h.pos < pos {
			continue
		}
		end := h.pos + len(h.n.value)
		// The longest match at this position.
		for j := i + 1; j < len(hits) && hits[j].pos == h.pos; j++ {
			if e := hits[j].pos + len(hits[j].n.value); e > end {
				end, h = e, hits[j]
			}
		}
		b.WriteString(text[pos:h.pos])
		fmt.Fprintf(&b, "«%s as %s»", h.n.s.label(), h.n.enc)
		pos = end
	}
	b.WriteString(text[pos:])
	return b.String()
}

// excerpt is the masked text around a hit.
func (m *matcher) excerpt(text string, h hit) string {
	from, to := max(0, h.pos-200), min(len(text), h.pos+len(h.n.value)+200)
	s := m.mask(text[from:to])
	s = strings.ReplaceAll(s, "\n", `\n`)
	if len(s) > 700 {
		s = s[:700] + "..."
	}
	return s
}

type leak struct {
	where, secret, enc string
	count              int
	first, example     string
}

type leakReport struct {
	byKey map[string]*leak
	order []string
}

// add records a hit. where is the place (a file, "response", a raw audit
// field); at locates it (line number, response label).
func (r *leakReport) add(where, at string, h hit, example string) {
	if r.byKey == nil {
		r.byKey = map[string]*leak{}
	}
	k := where + "|" + h.n.s.label() + "|" + h.n.enc
	l, ok := r.byKey[k]
	if !ok {
		l = &leak{where: where, secret: h.n.s.label(), enc: h.n.enc, first: at, example: example}
		r.byKey[k] = l
		r.order = append(r.order, k)
	}
	l.count++
}

func (r *leakReport) report(t *testing.T) {
	t.Helper()
	if len(r.order) == 0 {
		t.Logf("no secret found in any encoding in the responses, the Vault server log or the audit logs")
		return
	}
	sort.Strings(r.order)
	// Examples: every whole-form leak (one per secret kind/class and
	// encoding), then one 16-character-piece leak per place and secret
	// kind/class; then the full table.
	examples := 0
	shown := map[string]bool{}
	for _, pieceLeaks := range []bool{false, true} {
		for _, k := range r.order {
			l := r.byKey[k]
			isPiece := strings.Contains(l.enc, "piece")
			key := l.secret + "|" + l.enc
			if isPiece {
				key = l.where + "|" + l.secret
			}
			if isPiece != pieceLeaks || shown[key] || examples >= 50 {
				continue
			}
			shown[key] = true
			examples++
			t.Errorf("LEAK: %s as %s in %s (first at %s)\n    e.g.: %s", l.secret, l.enc, l.where, l.first, l.example)
		}
	}
	var summary strings.Builder
	for _, k := range r.order {
		l := r.byKey[k]
		fmt.Fprintf(&summary, "\n  %-48s %-30s %-38s %4dx", l.where, l.secret, l.enc, l.count)
	}
	t.Errorf("%d leak groups (where, secret kind/class, encoding, occurrences):%s", len(r.order), summary.String())
}

func scanFileLines(t *testing.T, m *matcher, leaks *leakReport, label, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("reading %s: %v", label, err)
		return
	}
	for n, line := range strings.Split(string(data), "\n") {
		for _, h := range maximal(m.find(line)) {
			leaks.add(label, fmt.Sprintf("%s line %d", path, n+1), h, m.excerpt(line, h))
		}
	}
}

// scanRawAudit searches a log_raw=true audit log outside what the operator
// typed (request.data) and outside the access token a creds read hands out.
func scanRawAudit(t *testing.T, m *matcher, leaks *leakReport, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("reading raw audit log: %v", err)
		return
	}
	entries := 0
	for n, line := range strings.Split(string(data), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var entry map[string]any
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Errorf("raw audit line %d: %v", n+1, err)
			continue
		}
		entries++
		reqPath := ""
		if req, ok := entry["request"].(map[string]any); ok {
			reqPath, _ = req["path"].(string)
			delete(req, "data")
		}
		if resp, ok := entry["response"].(map[string]any); ok && strings.HasPrefix(reqPath, "oauth/creds/") {
			if d, ok := resp["data"].(map[string]any); ok {
				delete(d, "access_token")
			}
		}
		walkStrings(entry, "", func(field, s string) {
			for _, h := range maximal(m.find(s)) {
				leaks.add("raw audit log field "+field, fmt.Sprintf("%s line %d (%v %s)", path, n+1, entry["type"], reqPath), h, m.excerpt(s, h))
			}
		})
	}
	if entries < 50 {
		t.Errorf("raw audit log has only %d entries", entries)
	}
}

func walkStrings(v any, path string, fn func(field, s string)) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			fn(path+"."+k+" (key)", k)
			walkStrings(e, path+"."+k, fn)
		}
	case []any:
		for i, e := range x {
			walkStrings(e, fmt.Sprintf("%s[%d]", path, i), fn)
		}
	case string:
		fn(path, x)
	}
}
