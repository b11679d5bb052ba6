package imitations

// GitLab (Doorkeeper-based OAuth 2.0 provider).
//
// Documentation read:
//   - "OAuth 2.0 identity provider API", https://docs.gitlab.com/api/oauth2/
//     (source doc/api/oauth2.md in the gitlabhq/gitlabhq mirror)
//   - "Configure GitLab as an OAuth 2.0 authentication identity provider",
//     https://docs.gitlab.com/integration/oauth_provider/
//   - Issue "OAuth token response no longer includes expires_in"
//     (gitlab-org/gitlab#360729), for the 2-hour expiry of every token since
//     GitLab 15.0.
//
// Behaviour imitated, with the documentation it follows:
//   - GET /oauth/authorize with client_id, redirect_uri, response_type=code,
//     state, scope (space-separated), optional code_challenge and
//     code_challenge_method=S256 ("Request authorization code" steps).
//   - POST /oauth/token, form parameters client_id, client_secret, code,
//     grant_type, redirect_uri, code_verifier; "The redirect_uri must match
//     the redirect_uri used in the original authorization request".
//   - Responses are JSON {access_token, token_type, expires_in: 7200,
//     refresh_token, created_at} (the examples); scope also appears (device
//     flow example).
//   - Refresh: "Refresh tokens may be used even after the access_token itself
//     expires. This request: Invalidates the existing access_token and
//     refresh_token. Sends new tokens in the response." — rotation, old pair
//     dead.
//   - Revocation POST /oauth/revoke with client_id, client_secret, token:
//     "The API returns a 200 response code and an empty JSON hash".
//   - GET /oauth/token/info with the access token (Bearer or access_token
//     parameter) answers resource_owner_id, scope (array), expires_in,
//     application.uid, created_at, plus the deprecated aliases scopes and
//     expires_in_seconds. This is Doorkeeper's token info, not RFC 7662.
//   - Device flow POST /oauth/authorize_device with client_id and scope:
//     device_code, user_code, verification_uri, verification_uri_complete,
//     expires_in 300, interval 5; polling sends grant_type, device_code,
//     client_id; errors authorization_pending, slow_down, expired_token,
//     access_denied.
//   - Password grant and HTTP Basic client credentials are documented; Basic
//     is accepted at the token endpoint.
//
// Assumed (docs silent):
//   - Error bodies and texts are Doorkeeper's defaults: invalid_grant (400)
//     "The provided authorization grant is invalid, expired, revoked, does not
//     match the redirection URI used in the authorization request, or was
//     issued to another client.", invalid_client (401) "Client authentication
//     failed due to unknown client, no client authentication included, or
//     unsupported authentication method.", unsupported_grant_type (400),
//     invalid_request (400); device-flow errors with 400.
//   - Revoking either token of a pair revokes the other (Doorkeeper keeps
//     both in one record); the rest of the grant is already dead by rotation.
//     Revoking with wrong client credentials answers 403
//     unauthorized_client; unknown tokens answer 200 {} (RFC 7009).
//   - No RFC 7662 introspection endpoint is documented (IntrospectionURL is
//     empty although Doorkeeper can serve /oauth/introspect).
//   - Rate limit: 429 with Retry-After and a plain "Retry later" body, as
//     GitLab.com's rack-attack throttles answer (rate-limit docs, not the
//     OAuth page).
//   - Refresh tokens do not expire on their own.

import (
	"net/http"
	"net/url"
	"strings"
	"time"
)

type gitlab struct{}

func (gitlab) name() string                              { return "gitlab" }
func (gitlab) refreshLifetime(*Server) time.Duration     { return 0 }
func (gitlab) accessLifetime(s *Server) time.Duration    { return s.accessTTL(7200 * time.Second) }
func (gitlab) tokenValue(s *Server, refresh bool) string { return randHex(32) }

func (gitlab) endpoints(s *Server) Endpoints {
	return Endpoints{
		AuthorizationURL:       s.URL + "/oauth/authorize",
		TokenURL:               s.URL + "/oauth/token",
		RevocationURL:          s.URL + "/oauth/revoke",
		DeviceAuthorizationURL: s.URL + "/oauth/authorize_device",
		TokenInfoURL:           s.URL + "/oauth/token/info",
	}
}

func (gitlab) authorize(s *Server, _ string, q url.Values) (*authCode, error) {
	if q.Get("client_id") != s.ClientID {
		return nil, errPage("Client authentication failed due to unknown client, no client authentication included, or unsupported authentication method.")
	}
	if q.Get("redirect_uri") == "" || !s.exactRedirect(q.Get("redirect_uri")) {
		return nil, errPage("The redirect uri included is not valid.")
	}
	if q.Get("response_type") != "code" {
		return nil, &redirectError{code: "unsupported_response_type", description: "The authorization server does not support this response type."}
	}
	ch, m, err := pkceParams(q, true)
	if err != nil {
		return nil, &redirectError{code: "invalid_request", description: err.Error()}
	}
	return &authCode{scopes: scopeList(q.Get("scope")), offline: true, redirectURI: q.Get("redirect_uri"), challenge: ch, method: m}, nil
}

type pageError string

func (e pageError) Error() string { return string(e) }

func errPage(msg string) error { return pageError(msg) }

const doorkeeperInvalidGrant = "The provided authorization grant is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client."

func (p gitlab) spec() *tokenSpec {
	return &tokenSpec{
		auth: []string{"post", "basic"}, publicDevice: true,
		rotate: rotateKillOld, refreshKillsAccess: true, redirectPolicy: redirectRFC,
		fail: func(s *Server, w http.ResponseWriter, r *http.Request, f failure, detail string) {
			switch f {
			case failClient, failClientAuthMethod:
				writeJSON(w, http.StatusUnauthorized, oauthError("invalid_client", "Client authentication failed due to unknown client, no client authentication included, or unsupported authentication method."))
			case failCode, failRefresh, failRefreshExpired:
				writeJSON(w, http.StatusBadRequest, oauthError("invalid_grant", doorkeeperInvalidGrant))
			case failUnsupportedGrant:
				writeJSON(w, http.StatusBadRequest, oauthError("unsupported_grant_type", "The authorization grant type is not supported by the authorization server."))
			case failInvalidRequest:
				writeJSON(w, http.StatusBadRequest, oauthError("invalid_request", "The request is missing a required parameter, includes an unsupported parameter value, or is otherwise malformed."))
			case failRateLimited:
				w.Header().Set("Retry-After", "60")
				w.Header().Set("Content-Type", "text/plain")
				w.WriteHeader(http.StatusTooManyRequests)
				_, _ = w.Write([]byte("Retry later\n"))
			case failPending:
				writeJSON(w, http.StatusBadRequest, oauthError("authorization_pending", "The authorization request is still pending as the end user hasn't yet completed the user-interaction steps."))
			case failSlowDown:
				writeJSON(w, http.StatusBadRequest, oauthError("slow_down", "The client is polling too frequently and should back off."))
			case failDeviceExpired:
				writeJSON(w, http.StatusBadRequest, oauthError("expired_token", "The device_code has expired, and the device authorization session has concluded."))
			case failDenied:
				writeJSON(w, http.StatusBadRequest, oauthError("access_denied", "The resource owner or authorization server denied the request."))
			case failBadDeviceCode:
				writeJSON(w, http.StatusBadRequest, oauthError("invalid_grant", doorkeeperInvalidGrant))
			}
		},
		success: func(s *Server, w http.ResponseWriter, r *http.Request, req *request, g *grant, m Minted, _ string) {
			writeJSON(w, http.StatusOK, obj{
				"access_token": m.AccessToken, "token_type": "Bearer",
				"expires_in": int(p.accessLifetime(s) / time.Second), "refresh_token": m.RefreshToken,
				"scope": strings.Join(g.scopes, " "), "created_at": s.now().Unix(),
			})
		},
	}
}

func (p gitlab) routes(s *Server, mux *http.ServeMux) {
	spec := p.spec()
	mux.HandleFunc("GET /oauth/authorize", s.serveAuthorize)
	mux.HandleFunc("POST /oauth/token", func(w http.ResponseWriter, r *http.Request) { s.serveToken(w, r, spec) })
	mux.HandleFunc("POST /oauth/authorize_device", func(w http.ResponseWriter, r *http.Request) {
		req, err := parse(r)
		if err != nil || req.clientID != s.ClientID {
			writeJSON(w, http.StatusUnauthorized, oauthError("invalid_client", "Client authentication failed due to unknown client, no client authentication included, or unsupported authentication method."))
			return
		}
		user := randFrom("0123456789ABCDEFGHJKLMNPQRSTUVWXYZ", 8)
		s.mu.Lock()
		dc, d := s.newDevice(scopeList(req.params.Get("scope")), true, user, 300*time.Second, 5)
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, obj{
			"device_code": dc, "user_code": user,
			"verification_uri": s.URL + "/oauth/device", "verification_uri_complete": s.URL + "/oauth/device?user_code=" + user,
			"expires_in": 300, "interval": int(d.interval / time.Second),
		})
	})
	mux.HandleFunc("POST /oauth/revoke", func(w http.ResponseWriter, r *http.Request) {
		req, err := parse(r)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, oauthError("invalid_request", ""))
			return
		}
		if req.clientID != s.ClientID || req.secret != s.ClientSecret {
			writeJSON(w, http.StatusForbidden, oauthError("unauthorized_client", "You are not authorized to revoke this token"))
			return
		}
		s.mu.Lock()
		if t := s.tokens[req.params.Get("token")]; t != nil {
			// Doorkeeper: the access token and its refresh token are one
			// record; revoking either ends both. With rotation, that pair
			// is all that is left of the grant.
			s.killGrant(t.g)
		}
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, obj{})
	})
	mux.HandleFunc("GET /oauth/token/info", func(w http.ResponseWriter, r *http.Request) {
		req, _ := parse(r)
		t, _ := s.bearerAccess(req)
		if t == nil {
			writeJSON(w, http.StatusUnauthorized, oauthError("invalid_token", "The access token is invalid"))
			return
		}
		s.mu.Lock()
		left := int(time.Until(t.expires) / time.Second)
		scopes := t.g.scopes
		created := t.g.created.Unix()
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, obj{
			"resource_owner_id": 1, "scope": scopes, "expires_in": left, "application": obj{"uid": s.ClientID},
			"created_at": created, "scopes": scopes, "expires_in_seconds": left,
		})
	})
}
