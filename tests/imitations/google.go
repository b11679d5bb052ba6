package imitations

// Google (OAuth 2.0 for Google APIs, OpenID Connect).
//
// Documentation read:
//   - "Using OAuth 2.0 for Web Server Applications",
//     https://developers.google.com/identity/protocols/oauth2/web-server
//     (offline access, refresh, revocation sections)
//   - "OAuth 2.0 for TV and Limited-Input Device Applications",
//     https://developers.google.com/identity/protocols/oauth2/limited-input-device
//   - "Using OAuth 2.0 to Access Google APIs",
//     https://developers.google.com/identity/protocols (refresh token
//     expiration)
//   The stored corpora returned these pages mostly in translation or as
//   excerpts; the error-status table of the device flow was read through
//   third-party restatements (cli/oauth PR #24, gapi-ocaml) and is marked
//   accordingly.
//
// Behaviour imitated, with the documentation it follows:
//   - Authorization GET /o/oauth2/v2/auth with client_id, redirect_uri
//     (must exactly match an authorized redirect URI, else the
//     redirect_uri_mismatch error page), response_type=code, scope
//     (required), access_type (online default, offline), prompt, state,
//     code_challenge (S256 or plain).
//   - "refresh_token: This field is only present if the access_type
//     parameter was set to offline in the authentication request", and a
//     refresh token is returned only the first time the user consents unless
//     prompt=consent is sent (the web-server page's offline-access section).
//   - Token endpoint POST /token (https://oauth2.googleapis.com/token):
//     code, client_id, client_secret, redirect_uri, grant_type; JSON
//     {access_token, expires_in, refresh_token?, scope, token_type: "Bearer",
//     id_token? (openid scope)}.
//   - Refresh answers carry no refresh_token: the one the client holds
//     stays valid (the refresh example response has none).
//   - Revocation POST /revoke with token in the query or the form body;
//     "The token can be an access token or a refresh token. If the token is
//     an access token and it has a corresponding refresh token, the refresh
//     token will also be revoked." 200 on success, 400 with an error code
//     otherwise. No client authentication.
//   - A revoked or expired refresh token answers 400 invalid_grant ("Token
//     has been expired or revoked." is the description Google sends).
//   - Device flow POST /device/code with client_id and scope:
//     device_code, user_code, verification_url (Google's spelling),
//     expires_in 1800, interval 5. Polling needs client_id AND
//     client_secret. Errors: authorization_pending (HTTP 428), slow_down
//     (403), access_denied (403), expired_token (400), invalid_grant (400),
//     invalid_client (401), unsupported_grant_type (400).
//
// Assumed (docs silent or not re-read verbatim):
//   - expires_in is 3599 (what Google sends; the docs' examples show 3920).
//   - Revoking any token ends the whole grant: the refresh token and every
//     access token issued from it.
//   - HTTP Basic client authentication is accepted as well as the body.
//   - Unknown client: 401 invalid_client "The OAuth client was not found.";
//     wrong secret: 401 invalid_client "Unauthorized"; bad code: 400
//     invalid_grant "Bad Request"; revoking an unknown token: 400
//     invalid_token "Token expired or revoked".
//   - Rate limit: 429 with Retry-After and {"error":"rate_limit_exceeded"}.
//   - id_token's sub is a fixed fake user id; the ID token is not signed
//     with a real key.

import (
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"
)

type google struct{}

func (google) name() string                           { return "google" }
func (google) refreshLifetime(*Server) time.Duration  { return 0 }
func (google) accessLifetime(s *Server) time.Duration { return s.accessTTL(3599 * time.Second) }
func (google) tokenValue(s *Server, refresh bool) string {
	if refresh {
		return "1//0" + randAlnum(100)
	}
	return "ya29.a0" + randAlnum(150)
}

func (google) endpoints(s *Server) Endpoints {
	return Endpoints{
		AuthorizationURL:       s.URL + "/o/oauth2/v2/auth",
		TokenURL:               s.URL + "/token",
		RevocationURL:          s.URL + "/revoke",
		DeviceAuthorizationURL: s.URL + "/device/code",
		Issuer:                 s.URL,
	}
}

func consentKey(scopes []string) string {
	c := slices.Clone(scopes)
	sort.Strings(c)
	return strings.Join(c, " ")
}

func (google) authorize(s *Server, _ string, q url.Values) (*authCode, error) {
	if q.Get("client_id") != s.ClientID {
		return nil, errPage("Error 401: invalid_client. The OAuth client was not found.")
	}
	if !s.exactRedirect(q.Get("redirect_uri")) {
		return nil, errPage("Error 400: redirect_uri_mismatch. You can't sign in to this app because it doesn't comply with Google's OAuth 2.0 policy.")
	}
	if q.Get("response_type") != "code" {
		return nil, errPage("Error 400: invalid_request. Invalid response_type.")
	}
	scopes := scopeList(q.Get("scope"))
	if len(scopes) == 0 {
		return nil, errPage("Error 400: invalid_request. Missing required parameter: scope")
	}
	ch, m, err := pkceParams(q, true)
	if err != nil {
		return nil, errPage("Error 400: invalid_request. " + err.Error())
	}
	at := q.Get("access_type")
	if at != "" && at != "online" && at != "offline" {
		return nil, errPage("Error 400: invalid_request. Invalid access_type: " + at)
	}
	key := consentKey(scopes)
	first := !s.consented[key]
	s.consented[key] = true
	prompts := strings.Fields(q.Get("prompt"))
	offline := at == "offline" && (first || slices.Contains(prompts, "consent"))
	return &authCode{scopes: scopes, offline: offline, redirectURI: q.Get("redirect_uri"), challenge: ch, method: m}, nil
}

func googleIDToken(s *Server, g *grant) string {
	now := s.now().Unix()
	return fakeJWT(obj{"iss": s.URL, "aud": s.ClientID, "azp": s.ClientID, "sub": "110169484474386276334", "iat": now, "exp": now + 3599})
}

func (p google) spec() *tokenSpec {
	return &tokenSpec{
		auth: []string{"post", "basic"}, rotate: rotateNone, redirectPolicy: redirectAlways,
		fail: func(s *Server, w http.ResponseWriter, r *http.Request, f failure, detail string) {
			switch f {
			case failClient, failClientAuthMethod:
				desc := "Unauthorized"
				if strings.Contains(detail, "client_id") {
					desc = "The OAuth client was not found."
				}
				writeJSON(w, http.StatusUnauthorized, oauthError("invalid_client", desc))
			case failCode:
				writeJSON(w, http.StatusBadRequest, oauthError("invalid_grant", "Bad Request"))
			case failRefresh, failRefreshExpired:
				writeJSON(w, http.StatusBadRequest, oauthError("invalid_grant", "Token has been expired or revoked."))
			case failUnsupportedGrant:
				writeJSON(w, http.StatusBadRequest, oauthError("unsupported_grant_type", "Invalid grant_type: "+detail))
			case failInvalidRequest:
				writeJSON(w, http.StatusBadRequest, oauthError("invalid_request", detail))
			case failRateLimited:
				w.Header().Set("Retry-After", "30")
				writeJSON(w, http.StatusTooManyRequests, oauthError("rate_limit_exceeded", "Rate Limit Exceeded"))
			case failPending:
				writeJSON(w, 428, oauthError("authorization_pending", "Precondition Required"))
			case failSlowDown:
				writeJSON(w, http.StatusForbidden, oauthError("slow_down", "Forbidden"))
			case failDenied:
				writeJSON(w, http.StatusForbidden, oauthError("access_denied", "Forbidden"))
			case failDeviceExpired:
				writeJSON(w, http.StatusBadRequest, oauthError("expired_token", "Bad Request"))
			case failBadDeviceCode:
				writeJSON(w, http.StatusBadRequest, oauthError("invalid_grant", "Malformed auth code."))
			}
		},
		success: func(s *Server, w http.ResponseWriter, r *http.Request, req *request, g *grant, m Minted, _ string) {
			o := obj{"access_token": m.AccessToken, "expires_in": int(p.accessLifetime(s) / time.Second),
				"scope": strings.Join(g.scopes, " "), "token_type": "Bearer"}
			if m.RefreshToken != "" {
				o["refresh_token"] = m.RefreshToken
			}
			if hasScope(g.scopes, "openid") {
				o["id_token"] = googleIDToken(s, g)
			}
			writeJSON(w, http.StatusOK, o)
		},
	}
}

func (p google) routes(s *Server, mux *http.ServeMux) {
	spec := p.spec()
	mux.HandleFunc("GET /o/oauth2/v2/auth", s.serveAuthorize)
	mux.HandleFunc("POST /token", func(w http.ResponseWriter, r *http.Request) { s.serveToken(w, r, spec) })
	mux.HandleFunc("POST /device/code", func(w http.ResponseWriter, r *http.Request) {
		req, err := parse(r)
		if err != nil || req.clientID != s.ClientID {
			writeJSON(w, http.StatusUnauthorized, oauthError("invalid_client", "The OAuth client was not found."))
			return
		}
		scopes := scopeList(req.params.Get("scope"))
		if len(scopes) == 0 {
			writeJSON(w, http.StatusBadRequest, oauthError("invalid_scope", "Missing required parameter: scope"))
			return
		}
		user := randFrom("BCDFGHJKLMNPQRSTVWXZ", 4) + "-" + randFrom("BCDFGHJKLMNPQRSTVWXZ", 4)
		s.mu.Lock()
		dc, d := s.newDevice(scopes, true, user, 1800*time.Second, 5)
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, obj{
			"device_code": dc, "user_code": user, "verification_url": s.URL + "/device",
			"expires_in": 1800, "interval": int(d.interval / time.Second),
		})
	})
	mux.HandleFunc("POST /revoke", func(w http.ResponseWriter, r *http.Request) {
		req, err := parse(r)
		if err != nil || req.params.Get("token") == "" {
			writeJSON(w, http.StatusBadRequest, oauthError("invalid_request", "Missing required parameter: token"))
			return
		}
		s.mu.Lock()
		t := s.tokens[req.params.Get("token")]
		ok := t != nil && s.live(t)
		if ok {
			s.killGrant(t.g)
		}
		s.mu.Unlock()
		if !ok {
			writeJSON(w, http.StatusBadRequest, oauthError("invalid_token", "Token expired or revoked"))
			return
		}
		writeJSON(w, http.StatusOK, obj{})
	})
}
