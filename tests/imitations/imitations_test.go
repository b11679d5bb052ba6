package imitations

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

const verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk0123456789"

func challenge() string {
	s := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(s[:])
}

type answer struct {
	status int
	header http.Header
	raw    string
	body   map[string]any
}

func (a answer) str(k string) string {
	v, _ := a.body[k].(string)
	return v
}

// call sends a token-style request: form (or JSON) body, client
// credentials by Basic or in the body.
func call(t *testing.T, s *Server, method, target string, params url.Values, basic, asJSON bool, header map[string]string) answer {
	t.Helper()
	p := url.Values{}
	for k, v := range params {
		p[k] = v
	}
	if !basic {
		p.Set("client_id", s.ClientID)
		p.Set("client_secret", s.ClientSecret)
	}
	var body io.Reader
	ct := "application/x-www-form-urlencoded"
	if asJSON {
		m := map[string]string{}
		for k := range p {
			m[k] = p.Get(k)
		}
		b, _ := json.Marshal(m)
		body, ct = strings.NewReader(string(b)), "application/json"
	} else {
		body = strings.NewReader(p.Encode())
	}
	req, err := http.NewRequest(method, target, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", ct)
	req.Header.Set("Accept", "application/json")
	if basic {
		req.SetBasicAuth(s.ClientID, s.ClientSecret)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	_ = json.Unmarshal(raw, &a.body)
	return a
}

type flowCase struct {
	name, mode  string
	scopes      string
	extra       map[string]string
	basic, json bool
	newRefresh  bool // a refresh answer carries a (new) refresh token
	oldDies     bool // the old refresh token dies on refresh
	sameRefresh bool // the refresh answer repeats the refresh token
	revoke      func(t *testing.T, s *Server, access, refresh string)
	dead        func(a answer) bool // the dead-grant answer
	ratelimit   int                 // HTTP status of the rate-limit answer
}

func errIs(status int, code string) func(answer) bool {
	return func(a answer) bool { return a.status == status && a.str("error") == code }
}

func TestFlows(t *testing.T) {
	rfc7009 := func(path string) func(t *testing.T, s *Server, access, refresh string) {
		return func(t *testing.T, s *Server, access, refresh string) {
			a := call(t, s, "POST", s.URL+path, url.Values{"token": {access}}, false, false, nil)
			if a.status != 200 {
				t.Fatalf("revoke: %d %s", a.status, a.raw)
			}
			if s.AccessTokenActive(access) {
				t.Fatal("access token still active after revocation")
			}
		}
	}
	cases := []flowCase{
		{name: "github", scopes: "", newRefresh: true, oldDies: true,
			revoke: func(t *testing.T, s *Server, access, refresh string) {
				req, _ := http.NewRequest("DELETE", s.Endpoints().RevocationURL, strings.NewReader(`{"access_token":"`+access+`"}`))
				req.SetBasicAuth(s.ClientID, s.ClientSecret)
				resp, err := http.DefaultClient.Do(req)
				if err != nil || resp.StatusCode != 204 {
					t.Fatalf("delete token: %v %v", err, resp.StatusCode)
				}
				if s.AccessTokenActive(access) || !s.RefreshTokenActive(refresh) {
					t.Fatal("DELETE .../token must kill the access token only")
				}
			},
			dead: errIs(200, "bad_refresh_token"), ratelimit: 429},
		{name: "gitlab", scopes: "read_user api", newRefresh: true, oldDies: true, revoke: rfc7009("/oauth/revoke"),
			dead: errIs(400, "invalid_grant"), ratelimit: 429},
		{name: "google", scopes: "openid https://www.googleapis.com/auth/drive.readonly", extra: map[string]string{"access_type": "offline", "prompt": "consent"},
			revoke: func(t *testing.T, s *Server, access, refresh string) {
				a := call(t, s, "POST", s.URL+"/revoke?token="+url.QueryEscape(access), nil, false, false, nil)
				if a.status != 200 || s.RefreshTokenActive(refresh) || s.GrantAlive(refresh) {
					t.Fatalf("google revocation of an access token must end the grant: %d %s", a.status, a.raw)
				}
			},
			dead: errIs(400, "invalid_grant"), ratelimit: 429},
		{name: "microsoft", scopes: "openid offline_access https://graph.microsoft.com/User.Read", newRefresh: true, oldDies: false,
			dead: errIs(400, "invalid_grant"), ratelimit: 429},
		{name: "slack", scopes: "chat:write,channels:read", basic: true, newRefresh: true, oldDies: true,
			revoke: func(t *testing.T, s *Server, access, refresh string) {
				req, _ := http.NewRequest("POST", s.URL+"/api/auth.revoke", nil)
				req.Header.Set("Authorization", "Bearer "+access)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				var b map[string]any
				_ = json.NewDecoder(resp.Body).Decode(&b)
				resp.Body.Close()
				if b["ok"] != true || b["revoked"] != true || s.AccessTokenActive(access) {
					t.Fatalf("auth.revoke: %v", b)
				}
			},
			dead: func(a answer) bool {
				return a.status == 200 && a.body["ok"] == false && a.str("error") == "invalid_refresh_token"
			}, ratelimit: 429},
		{name: "atlassian", scopes: "read:jira-work offline_access", json: true, extra: map[string]string{"audience": "api.atlassian.com", "prompt": "consent"},
			newRefresh: true, oldDies: true, dead: errIs(403, "invalid_grant"), ratelimit: 429},
		{name: "salesforce", scopes: "api refresh_token", revoke: rfc7009("/services/oauth2/revoke"),
			dead: errIs(400, "invalid_grant"), ratelimit: 429},
		{name: "salesforce", mode: "rotation", scopes: "api refresh_token", newRefresh: true, oldDies: true,
			dead: errIs(400, "invalid_grant"), ratelimit: 429},
		{name: "bitbucket", basic: true, newRefresh: true, sameRefresh: true,
			dead: errIs(400, "invalid_grant"), ratelimit: 429},
	}
	for _, c := range cases {
		t.Run(c.name+c.mode, func(t *testing.T) {
			s := Start(t, c.name, Options{Mode: c.mode, RedirectURI: "http://127.0.0.1:8200/v1/oauth/callback"})
			ep := s.Endpoints()
			q := url.Values{"client_id": {s.ClientID}, "redirect_uri": {s.RedirectURI}, "response_type": {"code"},
				"state": {"st4te"}, "code_challenge": {challenge()}, "code_challenge_method": {"S256"}}
			if c.scopes != "" {
				q.Set("scope", c.scopes)
			}
			for k, v := range c.extra {
				q.Set(k, v)
			}
			loc := s.Authorize(t, ep.AuthorizationURL+"?"+q.Encode())
			u, _ := url.Parse(loc)
			if u.Query().Get("state") != "st4te" || u.Query().Get("code") == "" || !strings.HasPrefix(loc, s.RedirectURI) {
				t.Fatalf("redirect %s", loc)
			}
			code := u.Query().Get("code")
			ex := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {s.RedirectURI}}
			if c.name != "bitbucket" {
				ex.Set("code_verifier", verifier)
			}
			a := call(t, s, "POST", ep.TokenURL, ex, c.basic, c.json, nil)
			if a.status != 200 || a.str("access_token") == "" || a.str("refresh_token") == "" {
				t.Fatalf("code exchange: %d %s", a.status, a.raw)
			}
			access, refresh := a.str("access_token"), a.str("refresh_token")
			if !s.AccessTokenActive(access) || !s.RefreshTokenActive(refresh) {
				t.Fatal("issued tokens not active")
			}
			// The code is single-use.
			if b := call(t, s, "POST", ep.TokenURL, ex, c.basic, c.json, nil); b.status == 200 && b.str("access_token") != "" {
				t.Fatal("code redeemed twice")
			}
			r := call(t, s, "POST", ep.TokenURL, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh}}, c.basic, c.json, nil)
			if r.status != 200 || r.str("access_token") == "" {
				t.Fatalf("refresh: %d %s", r.status, r.raw)
			}
			newRT := r.str("refresh_token")
			switch {
			case !c.newRefresh && newRT != "":
				t.Fatalf("refresh returned a refresh token: %s", r.raw)
			case c.newRefresh && newRT == "":
				t.Fatalf("refresh returned no refresh token: %s", r.raw)
			case c.sameRefresh && newRT != refresh:
				t.Fatal("refresh token changed")
			case c.newRefresh && !c.sameRefresh && newRT == refresh:
				t.Fatal("refresh token did not rotate")
			}
			if got := s.RefreshTokenActive(refresh); got == c.oldDies {
				t.Fatalf("old refresh token active=%v after refresh", got)
			}
			current := refresh
			if newRT != "" {
				current = newRT
			}
			access = r.str("access_token")
			if c.revoke != nil {
				c.revoke(t, s, access, current)
			}
			s.RateLimitNext(1)
			if rl := call(t, s, "POST", ep.TokenURL, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {current}}, c.basic, c.json, nil); rl.status != c.ratelimit {
				t.Fatalf("rate limit answer %d %s", rl.status, rl.raw)
			}
			// The user removes the app: the grant is dead.
			fresh := s.Mint(t, []string{"x"})
			s.RevokeApp()
			d := call(t, s, "POST", ep.TokenURL, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {fresh}}, c.basic, c.json, nil)
			if !c.dead(d) {
				t.Fatalf("dead grant answer: %d %s", d.status, d.raw)
			}
			if s.GrantAlive(fresh) {
				t.Fatal("grant alive after RevokeApp")
			}
			calls := s.Calls()
			if len(calls) == 0 {
				t.Fatal("no calls recorded")
			}
			for _, cl := range calls {
				for _, f := range cl.Fields {
					if strings.Contains(f, s.ClientSecret) || strings.Contains(f, refresh) {
						t.Fatal("call record holds a secret")
					}
				}
			}
		})
	}
}

func TestGitHubFormAndOAuthApp(t *testing.T) {
	s := Start(t, "github", Options{Mode: "oauth-app"})
	loc := s.Authorize(t, s.Endpoints().AuthorizationURL+"?client_id="+s.ClientID+"&scope=repo%20gist&state=a")
	code, _ := url.Parse(loc)
	a := call(t, s, "POST", s.Endpoints().TokenURL, url.Values{"code": {code.Query().Get("code")}}, false, false, map[string]string{"Accept": "*/*"})
	vals, err := url.ParseQuery(a.raw)
	if err != nil || a.status != 200 || !strings.HasPrefix(a.header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		t.Fatalf("form answer: %d %s %v", a.status, a.raw, err)
	}
	if vals.Get("scope") != "repo,gist" || vals.Get("token_type") != "bearer" || vals.Has("expires_in") || vals.Has("refresh_token") || !strings.HasPrefix(vals.Get("access_token"), "gho_") {
		t.Fatalf("classic token answer %s", a.raw)
	}
	// Wrong secret: 200 with an error.
	b := call(t, s, "POST", s.Endpoints().TokenURL, url.Values{"code": {"x"}, "client_secret": {"nope"}}, true, false, map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte(s.ClientID+":nope"))})
	if b.status != 200 || b.str("error") != "incorrect_client_credentials" {
		t.Fatalf("bad secret: %d %s", b.status, b.raw)
	}
	// Grant revocation ends everything.
	m := s.MintTokens(nil)
	req, _ := http.NewRequest("DELETE", s.Endpoints().GrantRevocationURL, strings.NewReader(`{"access_token":"`+m.AccessToken+`"}`))
	req.SetBasicAuth(s.ClientID, s.ClientSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 204 || s.AccessTokenActive(vals.Get("access_token")) {
		t.Fatalf("grant deletion: %v", err)
	}
	// Redirect mismatch goes back to the registered callback with an error.
	loc = s.Authorize(t, s.Endpoints().AuthorizationURL+"?client_id="+s.ClientID+"&redirect_uri=http://evil.example/cb")
	if !strings.HasPrefix(loc, s.RedirectURI) || !strings.Contains(loc, "error=redirect_uri_mismatch") {
		t.Fatalf("mismatch redirect %s", loc)
	}
}

// device runs a device flow: start, early poll pending, approve, poll.
func device(t *testing.T, s *Server, start url.Values, basic, secretOnPoll bool, pending func(answer) bool) answer {
	t.Helper()
	ep := s.Endpoints()
	start.Set("client_id", s.ClientID)
	req, _ := http.NewRequest("POST", ep.DeviceAuthorizationURL, strings.NewReader(start.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var da map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&da)
	resp.Body.Close()
	dc, _ := da["device_code"].(string)
	uc, _ := da["user_code"].(string)
	if dc == "" || uc == "" {
		t.Fatalf("device authorization %v", da)
	}
	poll := func() answer {
		p := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:device_code"}, "device_code": {dc}}
		if !secretOnPoll {
			p.Set("client_id", s.ClientID)
			req, _ := http.NewRequest("POST", ep.TokenURL, strings.NewReader(p.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Accept", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			a := answer{status: resp.StatusCode, raw: string(raw)}
			_ = json.Unmarshal(raw, &a.body)
			return a
		}
		return call(t, s, "POST", ep.TokenURL, p, basic, false, nil)
	}
	if a := poll(); !pending(a) {
		t.Fatalf("first poll: %d %s", a.status, a.raw)
	}
	s.ApproveDevice(t, uc)
	time.Sleep(1100 * time.Millisecond)
	return poll()
}

func TestDeviceFlows(t *testing.T) {
	t.Run("github", func(t *testing.T) {
		t.Parallel()
		s := Start(t, "github", Options{DeviceInterval: 1})
		a := device(t, s, url.Values{}, false, false, errIs(200, "authorization_pending"))
		if a.status != 200 || !strings.HasPrefix(a.str("access_token"), "ghu_") || a.str("refresh_token") == "" {
			t.Fatalf("%d %s", a.status, a.raw)
		}
	})
	t.Run("google", func(t *testing.T) {
		t.Parallel()
		s := Start(t, "google", Options{DeviceInterval: 1})
		a := device(t, s, url.Values{"scope": {"email"}}, false, true, errIs(428, "authorization_pending"))
		if a.status != 200 || a.str("refresh_token") == "" {
			t.Fatalf("%d %s", a.status, a.raw)
		}
	})
	t.Run("microsoft", func(t *testing.T) {
		t.Parallel()
		s := Start(t, "microsoft", Options{DeviceInterval: 1})
		a := device(t, s, url.Values{"scope": {"User.Read offline_access"}}, false, false, errIs(400, "authorization_pending"))
		if a.status != 200 || a.str("refresh_token") == "" || a.str("scope") != "User.Read" {
			t.Fatalf("%d %s", a.status, a.raw)
		}
	})
	t.Run("gitlab", func(t *testing.T) {
		t.Parallel()
		s := Start(t, "gitlab", Options{DeviceInterval: 1})
		a := device(t, s, url.Values{"scope": {"read_user"}}, false, false, errIs(400, "authorization_pending"))
		if a.status != 200 || a.str("refresh_token") == "" {
			t.Fatalf("%d %s", a.status, a.raw)
		}
	})
}

func TestProviderRules(t *testing.T) {
	t.Run("google no offline no refresh token", func(t *testing.T) {
		s := Start(t, "google", Options{})
		base := s.Endpoints().AuthorizationURL + "?client_id=" + url.QueryEscape(s.ClientID) + "&redirect_uri=" + url.QueryEscape(s.RedirectURI) + "&response_type=code&scope=email"
		exchange := func(loc string) answer {
			u, _ := url.Parse(loc)
			return call(t, s, "POST", s.Endpoints().TokenURL, url.Values{"grant_type": {"authorization_code"}, "code": {u.Query().Get("code")}, "redirect_uri": {s.RedirectURI}}, false, false, nil)
		}
		if a := exchange(s.Authorize(t, base)); a.str("refresh_token") != "" {
			t.Fatal("refresh token without access_type=offline")
		}
		// Already consented: offline without prompt=consent gives none.
		if a := exchange(s.Authorize(t, base+"&access_type=offline")); a.str("refresh_token") != "" {
			t.Fatal("refresh token on re-consent without prompt=consent")
		}
		if a := exchange(s.Authorize(t, base+"&access_type=offline&prompt=consent")); a.str("refresh_token") == "" {
			t.Fatal("no refresh token with offline + consent")
		}
		if _, err := s.TryAuthorize(strings.Replace(base, url.QueryEscape(s.RedirectURI), "http%3A%2F%2Fevil", 1)); err == nil {
			t.Fatal("redirect mismatch accepted")
		}
	})
	t.Run("microsoft needs offline_access", func(t *testing.T) {
		s := Start(t, "microsoft", Options{Tenant: "organizations"})
		loc := s.Authorize(t, s.Endpoints().AuthorizationURL+"?client_id="+s.ClientID+"&redirect_uri="+url.QueryEscape(s.RedirectURI)+"&response_type=code&scope=User.Read")
		u, _ := url.Parse(loc)
		a := call(t, s, "POST", s.Endpoints().TokenURL, url.Values{"grant_type": {"authorization_code"}, "code": {u.Query().Get("code")}, "redirect_uri": {s.RedirectURI}}, false, false, nil)
		if a.status != 200 || a.str("refresh_token") != "" {
			t.Fatalf("%d %s", a.status, a.raw)
		}
		rt := s.Mint(t, []string{"User.Read", "offline_access"})
		s.ExpireRefreshTokens()
		e := call(t, s, "POST", s.Endpoints().TokenURL, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}, false, false, nil)
		if e.status != 400 || e.str("error") != "invalid_grant" || !strings.HasPrefix(e.str("error_description"), "AADSTS700082") {
			t.Fatalf("%d %s", e.status, e.raw)
		}
	})
	t.Run("atlassian audience, json-only, resources", func(t *testing.T) {
		s := Start(t, "atlassian", Options{Mode: "json-only"})
		if _, err := s.TryAuthorize(s.Endpoints().AuthorizationURL + "?client_id=" + s.ClientID + "&redirect_uri=" + url.QueryEscape(s.RedirectURI) + "&response_type=code&scope=offline_access"); err == nil {
			t.Fatal("authorization without audience accepted")
		}
		rt := s.Mint(t, []string{"read:jira-work", "offline_access"})
		if a := call(t, s, "POST", s.Endpoints().TokenURL, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}, false, false, nil); a.status != 415 {
			t.Fatalf("form accepted in json-only mode: %d", a.status)
		}
		a := call(t, s, "POST", s.Endpoints().TokenURL, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}, false, true, nil)
		req, _ := http.NewRequest("GET", s.Endpoints().AccessibleResourcesURL, nil)
		req.Header.Set("Authorization", "Bearer "+a.str("access_token"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var sites []map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&sites)
		resp.Body.Close()
		if len(sites) != 1 || sites[0]["id"] == "" {
			t.Fatalf("accessible resources %v", sites)
		}
	})
	t.Run("salesforce fields and introspection", func(t *testing.T) {
		s := Start(t, "salesforce", Options{})
		rt := s.Mint(t, []string{"api", "refresh_token"})
		a := call(t, s, "POST", s.Endpoints().TokenURL, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}, false, false, nil)
		if a.str("instance_url") == "" || a.str("id") == "" || a.str("signature") == "" || a.str("issued_at") == "" || a.body["expires_in"] != nil || a.str("token_type") != "Bearer" {
			t.Fatalf("%s", a.raw)
		}
		in := call(t, s, "POST", s.Endpoints().IntrospectionURL, url.Values{"token": {a.str("access_token")}}, true, false, nil)
		if in.body["active"] != true {
			t.Fatalf("%s", in.raw)
		}
		call(t, s, "POST", s.Endpoints().RevocationURL, url.Values{"token": {rt}}, false, false, nil)
		if s.AccessTokenActive(a.str("access_token")) || s.GrantAlive(rt) {
			t.Fatal("revoking the refresh token must revoke its access tokens")
		}
		if in := call(t, s, "POST", s.Endpoints().IntrospectionURL, url.Values{"token": {a.str("access_token")}}, true, false, nil); in.body["active"] != false {
			t.Fatalf("%s", in.raw)
		}
	})
	t.Run("bitbucket basic only, scopes field", func(t *testing.T) {
		s := Start(t, "bitbucket", Options{})
		rt := s.Mint(t, []string{"account", "repository"})
		if a := call(t, s, "POST", s.Endpoints().TokenURL, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}, false, false, nil); a.str("error") != "invalid_client" {
			t.Fatalf("body credentials accepted: %s", a.raw)
		}
		a := call(t, s, "POST", s.Endpoints().TokenURL, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}, true, false, nil)
		if a.str("scopes") != "account repository" || a.body["scope"] != nil || a.str("state") != "refresh_token" || a.str("refresh_token") != rt {
			t.Fatalf("%s", a.raw)
		}
	})
	t.Run("slack scope commas and no-rotation", func(t *testing.T) {
		s := Start(t, "slack", Options{Mode: "no-rotation"})
		m := s.MintTokens([]string{"chat:write"})
		if m.RefreshToken != "" || !strings.HasPrefix(m.AccessToken, "xoxb-") || !s.AccessTokenActive(m.AccessToken) {
			t.Fatalf("%+v", m)
		}
		a := call(t, s, "POST", s.Endpoints().TokenURL, url.Values{"grant_type": {"authorization_code"}, "code": {"bogus"}}, true, false, nil)
		if a.status != 200 || a.body["ok"] != false || a.str("error") != "invalid_code" {
			t.Fatalf("%s", a.raw)
		}
	})
	t.Run("facts cover every provider", func(t *testing.T) {
		for _, n := range Names {
			if _, ok := Facts(n); !ok {
				t.Fatalf("no facts for %s", n)
			}
		}
	})
}
