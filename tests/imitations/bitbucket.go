package imitations

// Bitbucket Cloud OAuth 2.0 consumers.
//
// Documentation read:
//   - "OAuth 2.0" (Bitbucket Cloud developer docs),
//     https://developer.atlassian.com/cloud/bitbucket/oauth-2
//   - "Bitbucket Cloud REST API — Authentication methods",
//     https://developer.atlassian.com/cloud/bitbucket/rest/intro/
//   - "Use OAuth on Bitbucket Cloud",
//     https://confluence.atlassian.com/bitbucket/oauth-on-bitbucket-cloud-238027431.html
//
// Behaviour imitated, with the documentation it follows:
//   - Authorization https://bitbucket.org/site/oauth2/authorize?client_id=…
//     &response_type=code; the callback carries ?code=.
//   - Token endpoint https://bitbucket.org/site/oauth2/access_token with HTTP
//     Basic client credentials ("curl -X POST -u client_id:secret"),
//     grant_type=authorization_code&code=…, grant_type=refresh_token&
//     refresh_token=….
//   - "Access tokens expire in two hours" (expires_in 7200); "Most access
//     tokens grant responses ... therefore include a refresh token".
//   - The response names the granted scopes "scopes" (not "scope") and
//     carries "state" (the grant type used: authorization_code,
//     refresh_token) and token_type "bearer".
//   - Scopes are the permissions ticked on the consumer, not an
//     authorization parameter.
//   - "Callback URL ... If you do include the URL in a request it must be
//     appended to the same URL configured in the consumer": redirect_uri
//     must start with the registered callback.
//   - No revocation endpoint is documented.
//
// Assumed (docs silent):
//   - Refresh returns the same refresh token again; refresh tokens do not
//     expire (ExpireRefreshTokens still makes them fail, to test that path).
//   - Client credentials in the body are refused (only Basic is
//     documented): 400 invalid_client.
//   - Errors: 400 invalid_grant "Invalid refresh_token" / "The specified
//     code is not valid."; 401 invalid_client "Invalid OAuth client
//     credentials"; 400 unsupported_grant_type; rate limit 429 with
//     Retry-After.
//   - PKCE parameters are ignored; the consumer's permissions are
//     "account repository".

import (
	"net/http"
	"net/url"
	"strings"
	"time"
)

type bitbucket struct{}

func (bitbucket) name() string                           { return "bitbucket" }
func (bitbucket) refreshLifetime(*Server) time.Duration  { return 0 }
func (bitbucket) accessLifetime(s *Server) time.Duration { return s.accessTTL(7200 * time.Second) }
func (bitbucket) tokenValue(s *Server, refresh bool) string {
	if refresh {
		return randAlnum(24)
	}
	return randB64(100) + "="
}

func (bitbucket) endpoints(s *Server) Endpoints {
	return Endpoints{
		AuthorizationURL: s.URL + "/site/oauth2/authorize",
		TokenURL:         s.URL + "/site/oauth2/access_token",
	}
}

// bitbucketScopes are the permissions ticked on the imitated consumer.
var bitbucketScopes = []string{"account", "repository"}

func (bitbucket) authorize(s *Server, _ string, q url.Values) (*authCode, error) {
	if q.Get("client_id") != s.ClientID {
		return nil, errPage("Invalid client_id")
	}
	if q.Get("response_type") != "code" {
		return nil, &redirectError{code: "unsupported_response_type", description: "Unsupported response type: " + q.Get("response_type")}
	}
	ru := q.Get("redirect_uri")
	if ru != "" && !strings.HasPrefix(ru, s.RedirectURI) {
		return nil, errPage("invalid_request: redirect_uri does not match")
	}
	return &authCode{scopes: bitbucketScopes, offline: true, redirectURI: ru}, nil
}

func (p bitbucket) spec() *tokenSpec {
	return &tokenSpec{
		auth: []string{"basic"}, rotate: rotateSame, redirectPolicy: redirectLax,
		fail: func(s *Server, w http.ResponseWriter, r *http.Request, f failure, detail string) {
			switch f {
			case failClient:
				writeJSON(w, http.StatusUnauthorized, oauthError("invalid_client", "Invalid OAuth client credentials"))
			case failClientAuthMethod:
				writeJSON(w, http.StatusBadRequest, oauthError("invalid_client", "Client credentials missing; this request needs to be authenticated with the OAuth client id and secret"))
			case failCode:
				writeJSON(w, http.StatusBadRequest, oauthError("invalid_grant", "The specified code is not valid."))
			case failRefresh, failRefreshExpired:
				writeJSON(w, http.StatusBadRequest, oauthError("invalid_grant", "Invalid refresh_token"))
			case failUnsupportedGrant:
				writeJSON(w, http.StatusBadRequest, oauthError("unsupported_grant_type", "Unsupported grant type: "+detail))
			case failRateLimited:
				w.Header().Set("Retry-After", "60")
				writeJSON(w, http.StatusTooManyRequests, oauthError("rate_limited", "Rate limit for this resource has been exceeded"))
			default:
				writeJSON(w, http.StatusBadRequest, oauthError("invalid_request", detail))
			}
		},
		success: func(s *Server, w http.ResponseWriter, r *http.Request, req *request, g *grant, m Minted, grantType string) {
			writeJSON(w, http.StatusOK, obj{
				"access_token": m.AccessToken, "scopes": strings.Join(g.scopes, " "),
				"expires_in": int(p.accessLifetime(s) / time.Second), "refresh_token": m.RefreshToken,
				"token_type": "bearer", "state": grantType,
			})
		},
	}
}

func (p bitbucket) routes(s *Server, mux *http.ServeMux) {
	spec := p.spec()
	mux.HandleFunc("GET /site/oauth2/authorize", s.serveAuthorize)
	mux.HandleFunc("POST /site/oauth2/access_token", func(w http.ResponseWriter, r *http.Request) { s.serveToken(w, r, spec) })
}
