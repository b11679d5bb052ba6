package imitations

// Salesforce (connected apps / external client apps, OAuth 2.0 web server
// flow).
//
// Documentation read:
//   - "OAuth 2.0 Refresh Token Flow for Renewed Sessions",
//     https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_refresh_token_flow.htm
//   - "Understanding the OAuth Refresh Token Process" / "How Does the OAuth
//     Refresh Token Fit Into the Authentication Flow?" (REST API guide),
//     https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/intro_understanding_refresh_token_oauth.htm
//   - "Revoke OAuth Tokens Programmatically",
//     https://help.salesforce.com/s/articleView?id=xcloud.remoteaccess_revoke_token.htm
//   - Apex "OauthToken Class" (what revoking each token type revokes),
//     https://developer.salesforce.com/docs/platform/apex-ref/references/apex-ref/apex-class-auth-oauthtoken.html
//   - OpenID configuration, https://login.salesforce.com/.well-known/openid-configuration
//     (revocation_endpoint, introspection_endpoint)
//
// Behaviour imitated, with the documentation it follows:
//   - Endpoints /services/oauth2/authorize, /token, /revoke, /introspect
//     (OpenID configuration).
//   - Token responses carry access_token, signature, scope, instance_url,
//     id, token_type "Bearer", issued_at (ms), refresh_token on the code
//     exchange, id_token with openid; no expires_in ("Access tokens have a
//     limited lifetime specified by the session timeout").
//   - Refresh: grant_type=refresh_token, refresh_token, client_id,
//     client_secret; no new refresh token unless "refresh token rotation" is
//     enabled (Mode "rotation"): "the connected app issues a new refresh token
//     along with the access token each time the flow is invoked. The previous
//     refresh token is automatically invalidated."
//   - Revocation POST /services/oauth2/revoke, form token=…: "You can revoke
//     the app's access token, or the refresh token and all related access
//     tokens". 200 on success.
//   - Introspection (RFC 7662) with client credentials; active answers carry
//     active, scope, client_id, username, sub, token_type, exp, iat, nbf.
//   - A refresh token comes only with the refresh_token (or offline_access)
//     scope, when the connected app allows it.
//   - format / Accept: JSON is the default answer format.
//
// Assumed (docs silent or not verbatim):
//   - Access tokens are accepted for 2 hours (the default session timeout).
//   - Errors: 400 invalid_grant "expired access/refresh token" for dead
//     refresh tokens; 400 invalid_grant "invalid authorization code"; 400
//     invalid_client_id "client identifier invalid"; 400 invalid_client
//     "invalid client credentials"; 400 unsupported_grant_type "grant type
//     not supported"; revoking an unknown token: 400 invalid_token.
//   - Client credentials in the body or HTTP Basic.
//   - Without a scope parameter the connected app's scopes apply and
//     include refresh_token.
//   - Rate limit: 429 {"error": "rate_limit_exceeded"}, no Retry-After.
//   - Introspection without valid client credentials: 401 invalid_client.

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

type salesforce struct{}

func (salesforce) name() string                           { return "salesforce" }
func (salesforce) refreshLifetime(*Server) time.Duration  { return 0 }
func (salesforce) accessLifetime(s *Server) time.Duration { return s.accessTTL(2 * time.Hour) }
func (salesforce) tokenValue(s *Server, refresh bool) string {
	if refresh {
		return "5Aep861" + randAlnum(80)
	}
	return "00D5e000001N20Q!AQ4AQ" + randAlnum(90)
}

const (
	sfOrgID  = "00D5e000001N20QEAS"
	sfUserID = "0055e000005j1eCAAQ"
)

func (salesforce) endpoints(s *Server) Endpoints {
	return Endpoints{
		AuthorizationURL: s.URL + "/services/oauth2/authorize",
		TokenURL:         s.URL + "/services/oauth2/token",
		RevocationURL:    s.URL + "/services/oauth2/revoke",
		IntrospectionURL: s.URL + "/services/oauth2/introspect",
		Issuer:           s.URL,
	}
}

func (salesforce) authorize(s *Server, _ string, q url.Values) (*authCode, error) {
	if q.Get("client_id") != s.ClientID {
		return nil, errPage("error=invalid_client_id&error_description=client identifier invalid")
	}
	if !s.exactRedirect(q.Get("redirect_uri")) {
		return nil, errPage("error=redirect_uri_mismatch&error_description=redirect_uri must match configuration")
	}
	if q.Get("response_type") != "code" {
		return nil, &redirectError{code: "unsupported_response_type", description: "response type not supported"}
	}
	ch, m, err := pkceParams(q, true)
	if err != nil {
		return nil, &redirectError{code: "invalid_request", description: err.Error()}
	}
	scopes := scopeList(q.Get("scope"))
	offline := len(scopes) == 0 || hasScope(scopes, "refresh_token") || hasScope(scopes, "offline_access")
	if len(scopes) == 0 {
		scopes = []string{"refresh_token", "api"}
	}
	return &authCode{scopes: scopes, offline: offline, redirectURI: q.Get("redirect_uri"), challenge: ch, method: m}, nil
}

func (p salesforce) spec(s *Server) *tokenSpec {
	rot := rotateNone
	if s.Options.Mode == "rotation" {
		rot = rotateKillOld
	}
	return &tokenSpec{
		auth: []string{"post", "basic"}, rotate: rot, redirectPolicy: redirectRFC,
		fail: func(s *Server, w http.ResponseWriter, r *http.Request, f failure, detail string) {
			switch f {
			case failClient, failClientAuthMethod:
				if strings.Contains(detail, "client_id") {
					writeJSON(w, http.StatusBadRequest, oauthError("invalid_client_id", "client identifier invalid"))
				} else {
					writeJSON(w, http.StatusBadRequest, oauthError("invalid_client", "invalid client credentials"))
				}
			case failCode:
				writeJSON(w, http.StatusBadRequest, oauthError("invalid_grant", "invalid authorization code"))
			case failRefresh, failRefreshExpired:
				writeJSON(w, http.StatusBadRequest, oauthError("invalid_grant", "expired access/refresh token"))
			case failUnsupportedGrant:
				writeJSON(w, http.StatusBadRequest, oauthError("unsupported_grant_type", "grant type not supported"))
			case failRateLimited:
				writeJSON(w, http.StatusTooManyRequests, oauthError("rate_limit_exceeded", "rate limit exceeded"))
			default:
				writeJSON(w, http.StatusBadRequest, oauthError("invalid_request", detail))
			}
		},
		success: func(s *Server, w http.ResponseWriter, r *http.Request, req *request, g *grant, m Minted, _ string) {
			issued := strconv.FormatInt(s.now().UnixMilli(), 10)
			id := s.URL + "/id/" + sfOrgID + "/" + sfUserID
			mac := hmac.New(sha256.New, []byte(s.ClientSecret))
			mac.Write([]byte(id + issued))
			o := obj{
				"access_token": m.AccessToken, "signature": base64.StdEncoding.EncodeToString(mac.Sum(nil)),
				"scope": strings.Join(g.scopes, " "), "instance_url": s.URL, "id": id,
				"token_type": "Bearer", "issued_at": issued,
			}
			if m.RefreshToken != "" {
				o["refresh_token"] = m.RefreshToken
			}
			if hasScope(g.scopes, "openid") {
				now := s.now().Unix()
				o["id_token"] = fakeJWT(obj{"iss": s.URL, "aud": s.ClientID, "sub": id, "iat": now, "exp": now + 300})
			}
			writeJSON(w, http.StatusOK, o)
		},
	}
}

func (p salesforce) routes(s *Server, mux *http.ServeMux) {
	spec := p.spec(s)
	mux.HandleFunc("GET /services/oauth2/authorize", s.serveAuthorize)
	mux.HandleFunc("POST /services/oauth2/token", func(w http.ResponseWriter, r *http.Request) { s.serveToken(w, r, spec) })
	mux.HandleFunc("/services/oauth2/revoke", func(w http.ResponseWriter, r *http.Request) {
		req, err := parse(r)
		if err != nil || req.params.Get("token") == "" {
			writeJSON(w, http.StatusBadRequest, oauthError("invalid_request", "token is required"))
			return
		}
		s.mu.Lock()
		t := s.tokens[req.params.Get("token")]
		ok := t != nil && s.live(t)
		if ok {
			if t.refresh {
				// "the refresh token and all related access tokens"
				s.killGrant(t.g)
			} else {
				t.dead = true
			}
		}
		s.mu.Unlock()
		if !ok {
			writeJSON(w, http.StatusBadRequest, oauthError("invalid_token", "invalid token"))
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	mux.HandleFunc("POST /services/oauth2/introspect", func(w http.ResponseWriter, r *http.Request) {
		req, err := parse(r)
		if err != nil || req.clientID != s.ClientID || req.secret != s.ClientSecret {
			writeJSON(w, http.StatusUnauthorized, oauthError("invalid_client", "invalid client credentials"))
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		t := s.tokens[req.params.Get("token")]
		if t == nil || !s.live(t) {
			writeJSON(w, http.StatusOK, obj{"active": false})
			return
		}
		o := obj{
			"active": true, "scope": strings.Join(t.g.scopes, " "), "client_id": s.ClientID,
			"username": "user@example.com", "sub": s.URL + "/id/" + sfOrgID + "/" + sfUserID,
			"token_type": "access_token", "iat": t.g.created.Unix(), "nbf": t.g.created.Unix(),
		}
		if t.refresh {
			o["token_type"] = "refresh_token"
		}
		if !t.expires.IsZero() {
			o["exp"] = t.expires.Unix()
		}
		writeJSON(w, http.StatusOK, o)
	})
}
