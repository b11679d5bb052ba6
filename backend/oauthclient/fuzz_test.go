package oauthclient

import (
	"encoding/base64"
	"encoding/json"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Seed corpora live in testdata/fuzz/<target>/; plain `go test` runs them.
// scripts/fuzz.sh runs the fuzzers.

func assertSafeText(t *testing.T, what, s string, limit int) {
	t.Helper()
	if len(s) > limit+len("...") {
		t.Fatalf("%s is %d bytes long: %q", what, len(s), s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			t.Fatalf("%s has byte %#x: %q", what, s[i], s)
		}
	}
}

// secretEncodings is what the property tests check: the secret, its URL
// encodings and its base64 encodings.
func secretEncodings(s string) []string {
	b := []byte(s)
	return []string{
		s, url.QueryEscape(s), url.PathEscape(s),
		base64.StdEncoding.EncodeToString(b), base64.URLEncoding.EncodeToString(b),
		base64.RawStdEncoding.EncodeToString(b), base64.RawURLEncoding.EncodeToString(b),
	}
}

func assertNoEncodedSecret(t *testing.T, what, out, secret string) {
	t.Helper()
	for _, f := range secretEncodings(secret) {
		if strings.Contains(out, f) {
			t.Fatalf("%s %q contains %q, a form of the secret %q", what, out, f, secret)
		}
	}
}

func FuzzScrub(f *testing.F) {
	encoders := []func(string) string{
		func(s string) string { return s },
		url.QueryEscape,
		url.PathEscape,
		func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) },
		func(s string) string { return base64.URLEncoding.EncodeToString([]byte(s)) },
		func(s string) string { return base64.RawStdEncoding.EncodeToString([]byte(s)) },
		func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) },
		func(s string) string { b, _ := json.Marshal(s); return string(b) },
	}
	f.Fuzz(func(t *testing.T, secret, prefix, suffix string, mode uint8) {
		if len(secret) < 8 {
			return
		}
		text := prefix + encoders[int(mode)%len(encoders)](secret) + suffix
		out := scrub(text, []string{secret}, maxDescription)
		assertNoEncodedSecret(t, "scrubbed text", out, secret)
		assertSafeText(t, "scrubbed text", out, maxDescription)
	})
}

func FuzzParseErrorBody(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte, contentType, secret string) {
		b, ok := parseErrorBody(data, contentType)
		if !ok {
			if b != (errorBody{}) {
				t.Fatalf("no error found but %+v returned", b)
			}
			return
		}
		e := &Error{Endpoint: "token", StatusCode: 200}
		e.setUpstream(b, []string{secret})
		if e.Code == "" && e.Err == nil {
			t.Fatalf("an error body became %+v, which callers cannot tell from success", e)
		}
		if e.Code != "" && e.Code != b.code {
			t.Fatalf("code %q rewritten to %q", b.code, e.Code)
		}
		assertSafeText(t, "code", e.Code, maxCode)
		assertSafeText(t, "description", e.Description, maxDescription)
		if len(secret) >= 8 {
			assertNoEncodedSecret(t, "code", e.Code, secret)
			assertNoEncodedSecret(t, "description", e.Description, secret)
		}
		_ = e.Error()
	})
}

func FuzzParseTokenResponse(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte, contentType string) {
		before := time.Now()
		tok, err := parseTokenResponse(data, contentType, []string{"instance_url", "team.id", "ok"})
		after := time.Now()
		if err != nil {
			if tok != nil {
				t.Fatal("token and error")
			}
			return
		}
		if tok.AccessToken == "" || tok.TokenType == "" {
			t.Fatalf("incomplete token %+v", tok)
		}
		if !tok.Expiry.IsZero() && (!tok.Expiry.After(before) || tok.Expiry.After(after.Add(MaxTokenLifetime))) {
			t.Fatalf("expiry %v outside (now, now+%v]", tok.Expiry, MaxTokenLifetime)
		}
		if !tok.ScopeReturned && tok.Scopes != nil {
			t.Fatalf("scopes %q without a scope", tok.Scopes)
		}
		if tok.refreshLifetime < 0 || tok.refreshLifetime > MaxTokenLifetime {
			t.Fatalf("refresh lifetime %v outside [0, %v]", tok.refreshLifetime, MaxTokenLifetime)
		}
		for k, v := range tok.Fields {
			if !plainField(v) {
				t.Fatalf("field %s kept a value that is not plain: %q", k, v)
			}
		}
		for _, s := range tok.Scopes {
			if s == "" || strings.ContainsAny(s, " \t\r\n") {
				t.Fatalf("bad scope %q", s)
			}
		}
	})
}

func FuzzParseExpiresIn(f *testing.F) {
	f.Fuzz(func(t *testing.T, raw string) {
		d, err := parseJSONSeconds(json.RawMessage(raw), MaxTokenLifetime)
		if err != nil {
			if d != 0 {
				t.Fatalf("error with duration %v", d)
			}
			return
		}
		if d < 0 || d > MaxTokenLifetime || d%time.Second != 0 {
			t.Fatalf("%q gave %v", raw, d)
		}
		// Plain integers: exactly the value, clamped.
		lit := strings.TrimSpace(raw)
		if uq, err := strconv.Unquote(lit); err == nil && strings.HasPrefix(lit, `"`) {
			lit = strings.TrimSpace(uq)
		}
		if n, err := strconv.ParseInt(lit, 10, 64); err == nil && json.Valid([]byte(lit)) {
			want := time.Duration(0)
			switch {
			case n >= int64(MaxTokenLifetime/time.Second):
				want = MaxTokenLifetime
			case n > 0:
				want = time.Duration(n) * time.Second
			}
			if d != want {
				t.Fatalf("%q gave %v, want %v", raw, d, want)
			}
		}
	})
}

func FuzzParseDeviceAuthorization(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		now := time.Now()
		da, err := parseDeviceAuthorization(data, now)
		if err != nil {
			return
		}
		if da.DeviceCode == "" || da.UserCode == "" {
			t.Fatalf("incomplete %+v", da)
		}
		if da.Interval < MinDeviceInterval || da.Interval > MaxDeviceInterval {
			t.Fatalf("interval %v", da.Interval)
		}
		if !da.Expiry.IsZero() && (!da.Expiry.After(now) || da.Expiry.After(now.Add(MaxDeviceFlowLifetime))) {
			t.Fatalf("expiry %v not within (now, now+%v]", da.Expiry, MaxDeviceFlowLifetime)
		}
	})
}

// forbiddenForTest is an independent statement of the address policy, for
// the URL fuzzer to check CheckEndpointURL against.
func forbiddenForTest(a netip.Addr) bool {
	a = a.WithZone("")
	b := a.As16()
	var v4 []netip.Addr
	if a.Is4() || a.Is4In6() {
		v4 = append(v4, a.Unmap())
	} else {
		zero := func(bs []byte) bool {
			for _, c := range bs {
				if c != 0 {
					return false
				}
			}
			return true
		}
		last4 := netip.AddrFrom4([4]byte(b[12:]))
		switch {
		case b[0] == 0 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && zero(b[4:12]): // 64:ff9b::/96
			v4 = append(v4, last4)
		case zero(b[:12]) && a != netip.IPv6Loopback(): // ::/96
			v4 = append(v4, last4)
		case zero(b[:8]) && b[8] == 0xff && b[9] == 0xff && zero(b[10:12]): // ::ffff:0:0:0/96
			v4 = append(v4, last4)
		case b[0] == 0x20 && b[1] == 0x02: // 2002::/16
			v4 = append(v4, netip.AddrFrom4([4]byte(b[2:6])))
		}
		if b[0] == 0xfe && b[1]&0xc0 == 0x80 || b[0] == 0xff || a == netip.MustParseAddr("fd00:ec2::254") || a.IsUnspecified() {
			return true
		}
	}
	for _, v := range v4 {
		c := v.As4()
		if c[0] == 169 && c[1] == 254 || c[0] >= 224 && c[0] <= 239 || c[0] == 0 || v == netip.MustParseAddr("100.100.100.200") {
			return true
		}
	}
	return false
}

func FuzzCheckEndpointURL(f *testing.F) {
	f.Fuzz(func(t *testing.T, raw string) {
		if CheckEndpointURL(raw) != nil {
			return
		}
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatalf("accepted %q, which does not parse: %v", raw, err)
		}
		host := u.Hostname()
		switch {
		case u.Scheme == "https":
		case u.Scheme == "http" && IsLoopbackHost(host):
		default:
			t.Fatalf("accepted %q: scheme %q on host %q", raw, u.Scheme, host)
		}
		if u.User != nil || u.Fragment != "" || strings.Contains(raw, "#") || host == "" || u.Opaque != "" {
			t.Fatalf("accepted %q: %+v", raw, u)
		}
		if a, err := netip.ParseAddr(host); err == nil {
			if forbiddenForTest(a) {
				t.Fatalf("accepted %q: forbidden address %s", raw, a)
			}
			// The dial-time check agrees with the configuration-time one.
			if err := refuseForbiddenAddrs("tcp", netip.AddrPortFrom(a.WithZone(""), 443).String(), nil); err != nil {
				t.Fatalf("accepted %q but the dialer refuses it: %v", raw, err)
			}
		} else if endsInNumber(host) {
			t.Fatalf("accepted %q: numeric host %q", raw, host)
		}
	})
}
