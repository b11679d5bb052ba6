package imitations

// Slack (OAuth v2 with token rotation).
//
// Documentation read:
//   - "oauth.v2.access method", https://docs.slack.dev/reference/methods/oauth.v2.access
//     (also https://api.slack.com/methods/oauth.v2.access)
//   - "Using token rotation", https://docs.slack.dev/authentication/using-token-rotation
//   - "auth.revoke method", https://api.slack.com/methods/auth.revoke
//     (method JSON as mirrored in slackhq/slack-api-docs forks)
//   - "oauth.v2.exchange method", https://api.slack.com/methods/oauth.v2.exchange
//   - "Rate limits", https://docs.slack.dev/apis/web-api/rate-limits
//
// Behaviour imitated, with the documentation it follows:
//   - POST /api/oauth.v2.access, form or JSON; client_id and client_secret in
//     the body or, preferably, HTTP Basic ("If possible, avoid sending
//     client_id and client_secret as parameters ... supply ... using the HTTP
//     Basic authentication scheme"); code, grant_type, redirect_uri ("must
//     match the originally submitted URI (if one was sent)"), refresh_token
//     (example xoxe-1-abcdefg), code_verifier.
//   - Every answer is HTTP 200 with "ok": true or "ok": false and "error".
//   - Success: access_token, token_type "bot", scope (comma-separated),
//     bot_user_id, app_id, team {id, name}, enterprise, authed_user {id},
//     is_enterprise_install; with token rotation also refresh_token and
//     expires_in. "With token rotation, it expires every 12 hours": 43200.
//   - Rotation: "The refresh token is then revoked, and a new refresh token
//     is used": each refresh returns a new xoxe-1- refresh token, the old one
//     dies. Rotated access tokens are xoxe.xoxb-… (bot).
//   - Errors of oauth.v2.access: invalid_client_id, bad_client_secret,
//     invalid_code, bad_redirect_uri, invalid_grant_type,
//     invalid_refresh_token ("The given refresh token is invalid").
//   - auth.revoke: the token as Bearer or token parameter; {"ok": true,
//     "revoked": true}; test=1 revokes nothing; errors invalid_auth,
//     not_authed, token_revoked.
//   - Rate limits: "HTTP 429 Too Many Requests" with a Retry-After header;
//     body {"ok": false, "error": "ratelimited"}.
//   - Authorization GET /oauth/v2/authorize with client_id, scope
//     (comma-separated bot scopes), user_scope, redirect_uri, state,
//     code_challenge.
//   - Mode "no-rotation": classic long-lived xoxb- tokens without
//     refresh_token or expires_in.
//
// Assumed (docs silent):
//   - Revoking an access token with auth.revoke ends the installation's
//     grant (its refresh token dies too).
//   - redirect_uri must equal, or be under, the registered Redirect URL;
//     otherwise an error page (bad_redirect_uri).
//   - Refresh tokens do not expire; old access tokens stay valid after a
//     refresh until their own expiry.
//   - Only bot installs: a user-scope-only install (token in authed_user)
//     is not imitated.

import (
	"net/http"
	"net/url"
	"strings"
	"time"
)

type slack struct{}

func (slack) name() string                          { return "slack" }
func (slack) refreshLifetime(*Server) time.Duration { return 0 }
func (slack) rotation(s *Server) bool               { return s.Options.Mode != "no-rotation" }
func (p slack) accessLifetime(s *Server) time.Duration {
	if !p.rotation(s) {
		return 0
	}
	return s.accessTTL(43200 * time.Second)
}
func (p slack) tokenValue(s *Server, refresh bool) string {
	switch {
	case refresh:
		return "xoxe-1-" + randAlnum(140)
	case p.rotation(s):
		return "xoxe.xoxb-1-" + randAlnum(140)
	}
	return "xoxb-" + randDigits(13) + "-" + randDigits(13) + "-" + randAlnum(24)
}

func (slack) endpoints(s *Server) Endpoints {
	return Endpoints{
		AuthorizationURL: s.URL + "/oauth/v2/authorize",
		TokenURL:         s.URL + "/api/oauth.v2.access",
		RevocationURL:    s.URL + "/api/auth.revoke",
	}
}

func (slack) authorize(s *Server, _ string, q url.Values) (*authCode, error) {
	if q.Get("client_id") != s.ClientID {
		return nil, errPage("invalid_client_id: Invalid client_id parameter")
	}
	ru := q.Get("redirect_uri")
	if ru != "" && !s.subpathRedirect(ru) {
		return nil, errPage("bad_redirect_uri: redirect_uri did not match any configured URIs.")
	}
	ch, m, err := pkceParams(q, false)
	if err != nil {
		return nil, errPage("invalid_request: " + err.Error())
	}
	scopes := strings.FieldsFunc(q.Get("scope"), func(r rune) bool { return r == ',' || r == ' ' })
	if len(scopes) == 0 && q.Get("user_scope") == "" {
		return nil, errPage("invalid_scope: No scopes requested.")
	}
	return &authCode{scopes: scopes, offline: true, redirectURI: ru, challenge: ch, method: m}, nil
}

func (p slack) spec() *tokenSpec {
	notOK := func(w http.ResponseWriter, e string) { writeJSON(w, http.StatusOK, obj{"ok": false, "error": e}) }
	return &tokenSpec{
		auth: []string{"post", "basic"}, rotate: rotateKillOld, redirectPolicy: redirectRFC,
		fail: func(s *Server, w http.ResponseWriter, r *http.Request, f failure, detail string) {
			switch f {
			case failClient, failClientAuthMethod:
				if strings.Contains(detail, "secret") {
					notOK(w, "bad_client_secret")
				} else {
					notOK(w, "invalid_client_id")
				}
			case failCode:
				if strings.Contains(detail, "redirect_uri") {
					notOK(w, "bad_redirect_uri")
				} else {
					notOK(w, "invalid_code")
				}
			case failRefresh, failRefreshExpired:
				notOK(w, "invalid_refresh_token")
			case failUnsupportedGrant:
				notOK(w, "invalid_grant_type")
			case failInvalidRequest:
				notOK(w, "invalid_arguments")
			case failRateLimited:
				w.Header().Set("Retry-After", "30")
				writeJSON(w, http.StatusTooManyRequests, obj{"ok": false, "error": "ratelimited"})
			default:
				notOK(w, "invalid_grant_type")
			}
		},
		success: func(s *Server, w http.ResponseWriter, r *http.Request, req *request, g *grant, m Minted, _ string) {
			o := obj{
				"ok": true, "app_id": "A0KRD7HC3", "authed_user": obj{"id": "U1234"},
				"scope": strings.Join(g.scopes, ","), "token_type": "bot", "access_token": m.AccessToken,
				"bot_user_id": "U0KRQLJ9H", "team": obj{"id": "T9TK3CUKW", "name": "Slack Softball Team"},
				"enterprise": nil, "is_enterprise_install": false,
			}
			if p.rotation(s) {
				o["refresh_token"] = m.RefreshToken
				o["expires_in"] = int(p.accessLifetime(s) / time.Second)
			}
			writeJSON(w, http.StatusOK, o)
		},
	}
}

func (p slack) routes(s *Server, mux *http.ServeMux) {
	spec := p.spec()
	mux.HandleFunc("GET /oauth/v2/authorize", s.serveAuthorize)
	mux.HandleFunc("POST /api/oauth.v2.access", func(w http.ResponseWriter, r *http.Request) { s.serveToken(w, r, spec) })
	mux.HandleFunc("/api/auth.revoke", func(w http.ResponseWriter, r *http.Request) {
		req, err := parse(r)
		if err != nil {
			writeJSON(w, http.StatusOK, obj{"ok": false, "error": "invalid_arguments"})
			return
		}
		t, v := s.bearerAccess(req)
		switch {
		case v == "":
			writeJSON(w, http.StatusOK, obj{"ok": false, "error": "not_authed"})
			return
		case t == nil:
			writeJSON(w, http.StatusOK, obj{"ok": false, "error": "invalid_auth"})
			return
		}
		test := req.params.Get("test")
		if test != "1" && test != "true" {
			s.mu.Lock()
			s.killGrant(t.g)
			s.mu.Unlock()
			writeJSON(w, http.StatusOK, obj{"ok": true, "revoked": true})
			return
		}
		writeJSON(w, http.StatusOK, obj{"ok": true, "revoked": false})
	})
}
