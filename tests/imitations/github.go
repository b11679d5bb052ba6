package imitations

// GitHub: OAuth apps and GitHub Apps' user access tokens.
//
// Documentation read (search corpora "docs" and "pages", and the
// github/docs repository's Markdown sources):
//   - "Refreshing user access tokens",
//     https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/refreshing-user-access-tokens
//   - "Generating a user access token for a GitHub App",
//     https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/generating-a-user-access-token-for-a-github-app
//   - reusable "user-access-token-response-parameters" (github/docs
//     data/reusables/apps/user-access-token-response-parameters.md)
//   - "Troubleshooting OAuth app access token request errors",
//     https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/
//   - "Authorizing OAuth apps" (web and device flows),
//     https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps
//   - REST "OAuth authorizations" / "Delete an app token" and "Delete an app
//     authorization" (as quoted by docs.rs jinxapi-github and
//     openapi-github), https://docs.github.com/rest/apps/oauth-applications
//   - "PKCE support for OAuth and GitHub App authentication" (changelog),
//     https://github.blog/changelog/2025-07-14-pkce-support-for-oauth-and-github-app-authentication
//   - "Rate limits for the REST API" and "Troubleshooting the REST API",
//     https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api
//
// Behaviour imitated, with the documentation it follows:
//   - Token endpoint POST /login/oauth/access_token takes client_id,
//     client_secret, code, redirect_uri, code_verifier as parameters for the
//     code exchange (no grant_type documented for it), and grant_type,
//     refresh_token for a refresh (docs: the parameter tables). The answer is form-encoded
//     (access_token=…&scope=…&token_type=bearer) unless Accept asks for
//     JSON ("The format of these responses is determined by the accept header
//     you pass"). XML is not imitated.
//   - Mode "github-app" (default): expires_in is always 28800,
//     refresh_token starts with ghr_, refresh_token_expires_in is always
//     15897600, scope is always "" ("user-access-token-response-parameters").
//     Access tokens start with ghu_.
//   - Refresh: "Once you use a refresh token, that refresh token and the old
//     user access token will no longer work": rotation, old refresh token and
//     old access tokens die.
//   - Mode "oauth-app": classic OAuth app tokens (gho_), no expires_in, no
//     refresh token ("If you disabled expiration of user access tokens, this
//     parameter will be omitted"), scope is the comma-separated list the
//     authorization docs show (scope=repo%2Cgist).
//   - Errors come with HTTP 200 and an error field (device flow docs: "will
//     respond with a 200 status and an error response query parameter"):
//     incorrect_client_credentials, redirect_uri_mismatch,
//     bad_verification_code (texts from the troubleshooting page),
//     unsupported_grant_type, and the device ones authorization_pending,
//     slow_down (with the new interval, +5 s), expired_token,
//     incorrect_device_code, access_denied.
//   - Device flow POST /login/device/code with client_id (and scope):
//     device_code (40 chars), user_code "XXXX-XXXX", verification_uri,
//     expires_in 900, interval 5; polling needs client_id, device_code,
//     grant_type only (no secret).
//   - Authorization GET /login/oauth/authorize: GitHub Apps: redirect_uri
//     "must be an exact match to one of the URLs you provided as a Callback
//     URL"; OAuth apps: host and port must match, the path may be a
//     subdirectory of the callback URL. A mismatch redirects to the registered
//     callback with error=redirect_uri_mismatch (troubleshooting authorization
//     request errors). Without redirect_uri the registered callback is used.
//   - PKCE: code_challenge/code_challenge_method accepted, "Only the S256
//     code challenge method is accepted", verifier checked at the exchange;
//     not required.
//   - Revocation: DELETE /applications/{client_id}/token with Basic
//     client_id:client_secret and JSON {"access_token": …} revokes one token,
//     204. DELETE /applications/{client_id}/grant "will also delete all OAuth
//     tokens associated with the application for the user", 204.
//   - Rate limit: "403 Forbidden or 429 Too Many Requests", "the
//     x-ratelimit-remaining header will be 0", x-ratelimit-reset in epoch
//     seconds, retry-after may be present (REST troubleshooting page); here
//     429 with all three headers.
//
// Assumed (docs silent):
//   - A dead, rotated-away or expired refresh token answers (HTTP 200)
//     error=bad_refresh_token, "The refresh token passed is incorrect or
//     expired." — the docs do not list refresh errors; this code is what
//     GitHub is widely observed to send (NOT bad_refresh_verification_code).
//   - Basic client authentication is also accepted at the token endpoint.
//   - Deleting one access token leaves the refresh token and grant alive;
//     an unknown or dead token answers 404; missing or wrong Basic
//     credentials answer 401 {"message":"Requires authentication"}.
//   - The imitated user is one person: deleting the grant of any token ends
//     every grant of the app.
//   - The token endpoint's rate limit looks like the REST API's.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

type github struct{}

func (github) name() string { return "github" }

func (github) app(s *Server) bool { return s.Options.Mode != "oauth-app" }

func (p github) refreshLifetime(s *Server) time.Duration {
	return 15897600 * time.Second
}

func (p github) accessLifetime(s *Server) time.Duration {
	if !p.app(s) {
		return 0
	}
	return s.accessTTL(8 * time.Hour)
}

func (p github) tokenValue(s *Server, refresh bool) string {
	switch {
	case refresh:
		return "ghr_" + randAlnum(76)
	case p.app(s):
		return "ghu_" + randAlnum(36)
	}
	return "gho_" + randAlnum(36)
}

func (github) endpoints(s *Server) Endpoints {
	return Endpoints{
		AuthorizationURL:       s.URL + "/login/oauth/authorize",
		TokenURL:               s.URL + "/login/oauth/access_token",
		DeviceAuthorizationURL: s.URL + "/login/device/code",
		RevocationURL:          s.URL + "/applications/" + s.ClientID + "/token",
		GrantRevocationURL:     s.URL + "/applications/" + s.ClientID + "/grant",
	}
}

func (p github) authorize(s *Server, _ string, q url.Values) (*authCode, error) {
	if q.Get("client_id") != s.ClientID {
		return nil, fmt.Errorf("404 Not Found: no application with this client_id")
	}
	c := &authCode{}
	if ru := q.Get("redirect_uri"); ru != "" {
		ok := s.subpathRedirect(ru)
		if p.app(s) {
			ok = s.exactRedirect(ru)
		}
		if !ok {
			return nil, &redirectError{code: "redirect_uri_mismatch", description: "The redirect_uri MUST match the registered callback URL for this application.", to: s.RedirectURI}
		}
		c.redirectURI = ru
	}
	ch, m, err := pkceParams(q, false)
	if err != nil {
		return nil, err
	}
	c.challenge, c.method = ch, m
	if !p.app(s) {
		c.scopes = strings.FieldsFunc(q.Get("scope"), func(r rune) bool { return r == ' ' || r == ',' })
	}
	c.offline = p.app(s)
	return c, nil
}

// reply writes v form-encoded, or as JSON when Accept asks for it.
func (github) reply(w http.ResponseWriter, r *http.Request, status int, v obj) {
	if strings.Contains(r.Header.Get("Accept"), "json") {
		writeJSON(w, status, v)
		return
	}
	vals := url.Values{}
	for k, x := range v {
		vals.Set(k, fmt.Sprint(x))
	}
	w.Header().Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(vals.Encode()))
}

const ghDocs = "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/"

func (p github) spec() *tokenSpec {
	return &tokenSpec{
		auth:                 []string{"post", "basic"},
		publicDevice:         true,
		rotate:               rotateKillOld,
		refreshKillsAccess:   true,
		redirectPolicy:       redirectLax,
		codeWithoutGrantType: true,
		fail: func(s *Server, w http.ResponseWriter, r *http.Request, f failure, detail string) {
			e := func(code, desc, anchor string) {
				o := oauthError(code, desc)
				if anchor != "" {
					o["error_uri"] = ghDocs + "#" + anchor
				}
				p.reply(w, r, http.StatusOK, o)
			}
			switch f {
			case failClient, failClientAuthMethod:
				e("incorrect_client_credentials", "The client_id and/or client_secret passed are incorrect.", "incorrect-client-credentials")
			case failCode:
				if strings.Contains(detail, "redirect_uri") {
					e("redirect_uri_mismatch", "The redirect_uri MUST match the registered callback URL for this application.", "redirect-uri-mismatch")
				} else {
					e("bad_verification_code", "The code passed is incorrect or expired.", "bad-verification-code")
				}
			case failRefresh, failRefreshExpired:
				e("bad_refresh_token", "The refresh token passed is incorrect or expired.", "")
			case failUnsupportedGrant:
				e("unsupported_grant_type", "The grant type is not supported.", "")
			case failInvalidRequest:
				e("invalid_request", detail, "")
			case failPending:
				e("authorization_pending", "The authorization request is still pending.", "")
			case failSlowDown:
				iv, _ := strconv.Atoi(detail)
				o := oauthError("slow_down", "Too many requests have been made in the same timeframe.")
				o["interval"] = iv
				p.reply(w, r, http.StatusOK, o)
			case failDeviceExpired:
				e("expired_token", "The device_code has expired.", "")
			case failDenied:
				e("access_denied", "The authorization request was denied.", "")
			case failBadDeviceCode:
				e("incorrect_device_code", "The device_code provided is not valid.", "")
			case failRateLimited:
				ghRateLimit(w)
			}
		},
		success: func(s *Server, w http.ResponseWriter, r *http.Request, req *request, g *grant, m Minted, _ string) {
			o := obj{"access_token": m.AccessToken, "token_type": "bearer", "scope": ""}
			if p.app(s) {
				o["expires_in"] = int(p.accessLifetime(s) / time.Second)
				o["refresh_token"] = m.RefreshToken
				o["refresh_token_expires_in"] = 15897600
			} else {
				o["scope"] = strings.Join(g.scopes, ",")
			}
			p.reply(w, r, http.StatusOK, o)
		},
	}
}

func ghRateLimit(w http.ResponseWriter) {
	w.Header().Set("x-ratelimit-limit", "5000")
	w.Header().Set("x-ratelimit-remaining", "0")
	w.Header().Set("x-ratelimit-reset", strconv.FormatInt(time.Now().Add(time.Minute).Unix(), 10))
	w.Header().Set("retry-after", "60")
	writeJSON(w, http.StatusTooManyRequests, obj{
		"message":           "API rate limit exceeded.",
		"documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
	})
}

func (p github) routes(s *Server, mux *http.ServeMux) {
	spec := p.spec()
	mux.HandleFunc("GET /login/oauth/authorize", s.serveAuthorize)
	mux.HandleFunc("POST /login/oauth/access_token", func(w http.ResponseWriter, r *http.Request) { s.serveToken(w, r, spec) })
	mux.HandleFunc("POST /login/device/code", func(w http.ResponseWriter, r *http.Request) {
		req, err := parse(r)
		if err != nil || req.params.Get("client_id") != s.ClientID {
			p.reply(w, r, http.StatusOK, oauthError("incorrect_client_credentials", "The client_id and/or client_secret passed are incorrect."))
			return
		}
		var scopes []string
		if !p.app(s) {
			scopes = strings.FieldsFunc(req.params.Get("scope"), func(r rune) bool { return r == ' ' || r == ',' })
		}
		user := strings.ToUpper(randFrom("BCDFGHJKLMNPQRSTVWXZ", 4) + "-" + randFrom("BCDFGHJKLMNPQRSTVWXZ", 4))
		s.mu.Lock()
		dc, d := s.newDevice(scopes, p.app(s), user, 900*time.Second, 5)
		s.mu.Unlock()
		p.reply(w, r, http.StatusOK, obj{
			"device_code": dc, "user_code": user, "verification_uri": s.URL + "/login/device",
			"expires_in": 900, "interval": int(d.interval / time.Second),
		})
	})
	apiAuth := func(w http.ResponseWriter, r *http.Request) (string, bool) {
		id, sec, ok := r.BasicAuth()
		if !ok || id != s.ClientID || sec != s.ClientSecret || r.PathValue("client_id") != s.ClientID {
			writeJSON(w, http.StatusUnauthorized, obj{"message": "Requires authentication", "documentation_url": "https://docs.github.com/rest"})
			return "", false
		}
		var body struct {
			AccessToken string `json:"access_token"`
		}
		if json.NewDecoder(r.Body).Decode(&body) != nil || body.AccessToken == "" {
			writeJSON(w, http.StatusUnprocessableEntity, obj{"message": "Invalid request.\n\n\"access_token\" wasn't supplied.", "documentation_url": "https://docs.github.com/rest"})
			return "", false
		}
		return body.AccessToken, true
	}
	mux.HandleFunc("DELETE /applications/{client_id}/token", func(w http.ResponseWriter, r *http.Request) {
		v, ok := apiAuth(w, r)
		if !ok {
			return
		}
		s.mu.Lock()
		t := s.tokens[v]
		found := t != nil && !t.refresh && s.live(t)
		if found {
			t.dead = true
		}
		s.mu.Unlock()
		if !found {
			writeJSON(w, http.StatusNotFound, obj{"message": "Not Found", "documentation_url": "https://docs.github.com/rest/apps/oauth-applications#delete-an-app-token"})
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("DELETE /applications/{client_id}/grant", func(w http.ResponseWriter, r *http.Request) {
		v, ok := apiAuth(w, r)
		if !ok {
			return
		}
		s.mu.Lock()
		t := s.tokens[v]
		found := t != nil && !t.refresh && s.live(t)
		if found {
			for _, g := range s.grants {
				s.killGrant(g)
			}
		}
		s.mu.Unlock()
		if !found {
			writeJSON(w, http.StatusNotFound, obj{"message": "Not Found", "documentation_url": "https://docs.github.com/rest/apps/oauth-applications#delete-an-app-authorization"})
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}
