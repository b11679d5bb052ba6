package imitations

// Atlassian Cloud OAuth 2.0 (3LO) apps.
//
// Documentation read:
//   - "OAuth 2.0 (3LO) apps",
//     https://developer.atlassian.com/cloud/jira/platform/oauth-2-3lo-apps/
//   - "Implementing the Refresh Token Flow",
//     https://developer.atlassian.com/cloud/oauth/getting-started/refresh-tokens
//   - Atlassian developer community "Refresh token expire after 36000
//     seconds" (Atlassian staff answer on inactivity and absolute expiry)
//     and "Deprecating persistent refresh tokens" announcement.
//
// Behaviour imitated, with the documentation it follows:
//   - Authorization GET https://auth.atlassian.com/authorize with
//     audience=api.atlassian.com (required), client_id, scope, redirect_uri,
//     state, response_type=code, prompt=consent.
//   - "To get a refresh token in your initial authorization flow, add
//     offline_access to the scope parameter".
//   - POST /oauth/token with a JSON body (the documented curl examples use
//     Content-Type: application/json): grant_type, client_id,
//     client_secret, code, redirect_uri / refresh_token.
//   - Response {access_token, expires_in, scope, refresh_token (offline),
//     token_type}; access tokens live 1 hour (3600).
//   - "You receive a new refresh token as well and the refresh token you
//     used for the request is disabled": rotation, old one dead.
//   - A dead refresh token answers 403 Forbidden {"error": "invalid_grant",
//     "error_description": "Unknown or invalid refresh token."}.
//   - Refresh tokens expire after 90 days of inactivity (reset by each
//     rotation) and 365 days after the first one (community answer by
//     Atlassian staff); here: 90 days per token.
//   - GET https://api.atlassian.com/oauth/token/accessible-resources with
//     the access token as Bearer: [{id, url, name, scopes, avatarUrl}].
//   - No revocation endpoint is documented.
//
// Assumed (docs silent):
//   - Form-encoded token requests are accepted too (auth.atlassian.com
//     also takes them); Mode "json-only" rejects them with 415, to check that
//     a client sends the documented JSON.
//   - Only client_secret in the body is accepted (no HTTP Basic).
//   - prompt=consent is not enforced; PKCE is verified when sent.
//   - Bad code: 403 invalid_grant "Invalid authorization code"; wrong
//     client: 401 access_denied "Unauthorized"; rate limit: 429 with
//     Retry-After.
//   - The 365-day absolute expiry is not imitated (ExpireRefreshTokens
//     covers expiry).

import (
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"
)

type atlassian struct{}

func (atlassian) name() string                           { return "atlassian" }
func (atlassian) refreshLifetime(*Server) time.Duration  { return 90 * 24 * time.Hour }
func (atlassian) accessLifetime(s *Server) time.Duration { return s.accessTTL(3600 * time.Second) }
func (atlassian) tokenValue(s *Server, refresh bool) string {
	if refresh {
		return "eyJraWQiOiI1MWE2YjE2MjRlMTQ5ZDFiYTdhM2VmZjciLCJhbGciOiJSUzI1NiJ9." + randB64(300) + "." + randB64(64)
	}
	return fakeJWT(obj{"iss": "https://auth.atlassian.com", "aud": "api.atlassian.com", "jti": uuid()})
}

func (atlassian) endpoints(s *Server) Endpoints {
	return Endpoints{
		AuthorizationURL:       s.URL + "/authorize",
		TokenURL:               s.URL + "/oauth/token",
		AccessibleResourcesURL: s.URL + "/oauth/token/accessible-resources",
	}
}

func (atlassian) authorize(s *Server, _ string, q url.Values) (*authCode, error) {
	if q.Get("audience") != "api.atlassian.com" {
		return nil, errPage("invalid_request: audience must be api.atlassian.com")
	}
	if q.Get("client_id") != s.ClientID {
		return nil, errPage("Unknown client")
	}
	if !s.exactRedirect(q.Get("redirect_uri")) {
		return nil, errPage("The redirect_uri is not whitelisted for this app.")
	}
	if q.Get("response_type") != "code" {
		return nil, &redirectError{code: "unsupported_response_type", description: "Unsupported response type: " + q.Get("response_type")}
	}
	ch, m, err := pkceParams(q, false)
	if err != nil {
		return nil, &redirectError{code: "invalid_request", description: err.Error()}
	}
	scopes := scopeList(q.Get("scope"))
	return &authCode{scopes: scopes, offline: hasScope(scopes, "offline_access"), redirectURI: q.Get("redirect_uri"), challenge: ch, method: m}, nil
}

func (p atlassian) spec() *tokenSpec {
	return &tokenSpec{
		auth: []string{"post"}, rotate: rotateKillOld, redirectPolicy: redirectRFC,
		fail: func(s *Server, w http.ResponseWriter, r *http.Request, f failure, detail string) {
			switch f {
			case failClient, failClientAuthMethod:
				writeJSON(w, http.StatusUnauthorized, oauthError("access_denied", "Unauthorized"))
			case failCode:
				writeJSON(w, http.StatusForbidden, oauthError("invalid_grant", "Invalid authorization code"))
			case failRefresh, failRefreshExpired:
				writeJSON(w, http.StatusForbidden, oauthError("invalid_grant", "Unknown or invalid refresh token."))
			case failUnsupportedGrant:
				writeJSON(w, http.StatusForbidden, oauthError("unsupported_grant_type", "Unsupported grant type: "+detail))
			case failRateLimited:
				w.Header().Set("Retry-After", "60")
				writeJSON(w, http.StatusTooManyRequests, oauthError("too_many_requests", "Too Many Requests"))
			default:
				writeJSON(w, http.StatusBadRequest, oauthError("invalid_request", detail))
			}
		},
		success: func(s *Server, w http.ResponseWriter, r *http.Request, req *request, g *grant, m Minted, _ string) {
			o := obj{"access_token": m.AccessToken, "expires_in": int(p.accessLifetime(s) / time.Second), "token_type": "Bearer", "scope": strings.Join(g.scopes, " ")}
			if m.RefreshToken != "" {
				o["refresh_token"] = m.RefreshToken
			}
			writeJSON(w, http.StatusOK, o)
		},
	}
}

func (p atlassian) routes(s *Server, mux *http.ServeMux) {
	spec := p.spec()
	mux.HandleFunc("GET /authorize", s.serveAuthorize)
	mux.HandleFunc("POST /oauth/token", func(w http.ResponseWriter, r *http.Request) {
		if s.Options.Mode == "json-only" {
			if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
				writeJSON(w, http.StatusUnsupportedMediaType, oauthError("invalid_request", "Content-Type must be application/json"))
				return
			}
		}
		s.serveToken(w, r, spec)
	})
	mux.HandleFunc("GET /oauth/token/accessible-resources", func(w http.ResponseWriter, r *http.Request) {
		req, _ := parse(r)
		if req == nil || req.bearer == "" {
			writeJSON(w, http.StatusUnauthorized, obj{"code": 401, "message": "Unauthorized"})
			return
		}
		t, _ := s.bearerAccess(&request{bearer: req.bearer, params: url.Values{}})
		if t == nil {
			writeJSON(w, http.StatusUnauthorized, obj{"code": 401, "message": "Unauthorized"})
			return
		}
		s.mu.Lock()
		scopes := t.g.scopes
		s.mu.Unlock()
		var shown []string
		for _, sc := range scopes {
			if sc != "offline_access" {
				shown = append(shown, sc)
			}
		}
		writeJSON(w, http.StatusOK, []obj{{
			"id": "1324a887-45db-1bf4-1e99-ef0ff456d421", "url": "https://your-domain.atlassian.net",
			"name": "your-domain", "scopes": shown, "avatarUrl": "https://site-admin-avatar-cdn.prod.public.atl-paas.net/avatars/240/flag.png",
		}})
	})
}
