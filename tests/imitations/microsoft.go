package imitations

// Microsoft Entra ID (Microsoft identity platform, v2.0 endpoints).
//
// Documentation read:
//   - "Microsoft identity platform and OAuth 2.0 authorization code flow",
//     https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-auth-code-flow
//   - "Refresh tokens in the Microsoft identity platform",
//     https://learn.microsoft.com/en-us/entra/identity-platform/refresh-tokens
//   - "Microsoft identity platform and the OAuth 2.0 device authorization
//     grant flow",
//     https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-device-code
//   - Microsoft Q&A "Invalidate old refresh token after using it" (answer
//     restating the refresh-token page) and "Refresh token expiry and the
//     corresponding error message" (AADSTS700082 text).
//
// Behaviour imitated, with the documentation it follows:
//   - Endpoints under /{tenant}/oauth2/v2.0/ (authorize, token,
//     devicecode); tenant is common, organizations, consumers, a GUID or a
//     domain; the imitation accepts any.
//   - Authorization: client_id, response_type=code, redirect_uri (exact
//     match with a registered one, else error page AADSTS50011), scope
//     (required), state, prompt, code_challenge (S256 or plain).
//   - A refresh token is returned only when offline_access was requested
//     ("To get a refresh token ... pass offline_access").
//   - Token responses: token_type "Bearer", scope, expires_in, ext_expires_in,
//     access_token, refresh_token (offline_access), id_token (openid).
//   - "Refresh tokens replace themselves with a fresh token upon every use.
//     The Microsoft identity platform doesn't revoke old refresh tokens when
//     used to fetch new access tokens": rotation, old one still valid.
//     Refresh token lifetime 90 days ("The default lifetime for the refresh
//     tokens is 24 hours for single page apps and 90 days for all other
//     scenarios").
//   - Client secret in the body, or "the Basic auth pattern of instead
//     providing credentials in the Authorization header, per RFC 6749".
//   - Errors: JSON with error, error_description (AADSTS code, trace and
//     correlation ids, timestamp), error_codes, timestamp, trace_id,
//     correlation_id, error_uri; invalid_grant for dead codes and refresh
//     tokens (400), invalid_client (401).
//   - No revocation endpoint (the refresh-token page points to revoking
//     all of a user's sessions through Microsoft Graph instead).
//   - Device flow: POST devicecode with client_id and scope: user_code,
//     device_code, verification_uri, expires_in 900, interval 5, message.
//     Polling errors (400): authorization_pending, authorization_declined
//     (not access_denied), bad_verification_code, expired_token. No
//     slow_down is documented, so early polls get authorization_pending.
//
// Assumed (docs silent or not verbatim):
//   - expires_in 3599 (docs: "3599" in examples; real lifetimes vary 60-90
//     min).
//   - The scope returned is the requested scopes without offline_access.
//   - AADSTS codes: revoked grant 50173, expired refresh token 700082,
//     unknown refresh token 9002313, bad code 70000, reused code 54005,
//     PKCE mismatch 501481, wrong secret 7000215 (401 invalid_client),
//     unknown client 700016 (400 unauthorized_client).
//   - Rate limit: 429 with Retry-After and error temporarily_unavailable.

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

type microsoft struct{}

func (microsoft) name() string                           { return "microsoft" }
func (microsoft) refreshLifetime(*Server) time.Duration  { return 90 * 24 * time.Hour }
func (microsoft) accessLifetime(s *Server) time.Duration { return s.accessTTL(3599 * time.Second) }
func (microsoft) tokenValue(s *Server, refresh bool) string {
	if refresh {
		return "1.AXEA" + randB64(300)
	}
	return "eyJ0eXAiOiJKV1QiLCJub25jZSI6" + randB64(600)
}

func (microsoft) endpoints(s *Server) Endpoints {
	base := s.URL + "/" + s.Options.Tenant + "/oauth2/v2.0"
	return Endpoints{
		AuthorizationURL:       base + "/authorize",
		TokenURL:               base + "/token",
		DeviceAuthorizationURL: base + "/devicecode",
		Issuer:                 s.URL + "/" + s.Options.Tenant + "/v2.0",
	}
}

func (microsoft) authorize(s *Server, _ string, q url.Values) (*authCode, error) {
	if q.Get("client_id") != s.ClientID {
		return nil, errPage("AADSTS700016: Application with identifier '" + q.Get("client_id") + "' was not found in the directory.")
	}
	if !s.exactRedirect(q.Get("redirect_uri")) {
		return nil, errPage("AADSTS50011: The redirect URI specified in the request does not match the redirect URIs configured for the application.")
	}
	if q.Get("response_type") != "code" {
		return nil, &redirectError{code: "unsupported_response_type", description: "AADSTS70005: response_type is not supported."}
	}
	scopes := scopeList(q.Get("scope"))
	if len(scopes) == 0 {
		return nil, &redirectError{code: "invalid_request", description: "AADSTS900144: The request body must contain the following parameter: 'scope'."}
	}
	ch, m, err := pkceParams(q, true)
	if err != nil {
		return nil, &redirectError{code: "invalid_request", description: "AADSTS501491: " + err.Error()}
	}
	return &authCode{scopes: scopes, offline: hasScope(scopes, "offline_access"), redirectURI: q.Get("redirect_uri"), challenge: ch, method: m}, nil
}

func msError(code string, aadsts int, text string) obj {
	now := time.Now().UTC()
	trace, corr := uuid(), uuid()
	return obj{
		"error":             code,
		"error_description": fmt.Sprintf("AADSTS%d: %s Trace ID: %s Correlation ID: %s Timestamp: %s", aadsts, text, trace, corr, now.Format("2006-01-02 15:04:05Z")),
		"error_codes":       []int{aadsts},
		"timestamp":         now.Format("2006-01-02 15:04:05Z"),
		"trace_id":          trace,
		"correlation_id":    corr,
		"error_uri":         fmt.Sprintf("https://login.microsoftonline.com/error?code=%d", aadsts),
	}
}

func (p microsoft) spec() *tokenSpec {
	return &tokenSpec{
		auth: []string{"post", "basic"}, publicDevice: true, noSlowDown: true,
		rotate: rotateKeepOld, redirectPolicy: redirectAlways,
		fail: func(s *Server, w http.ResponseWriter, r *http.Request, f failure, detail string) {
			switch f {
			case failClient, failClientAuthMethod:
				if strings.Contains(detail, "client_id") {
					writeJSON(w, http.StatusBadRequest, msError("unauthorized_client", 700016, "Application was not found in the directory."))
				} else {
					writeJSON(w, http.StatusUnauthorized, msError("invalid_client", 7000215, "Invalid client secret provided."))
				}
			case failCode:
				switch {
				case strings.Contains(detail, "already used"):
					writeJSON(w, http.StatusBadRequest, msError("invalid_grant", 54005, "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token."))
				case strings.Contains(detail, "verifier"):
					writeJSON(w, http.StatusBadRequest, msError("invalid_grant", 501481, "The Code_Verifier does not match the code_challenge supplied in the authorization request."))
				default:
					writeJSON(w, http.StatusBadRequest, msError("invalid_grant", 70000, "The provided value for the 'code' parameter is not valid."))
				}
			case failRefresh:
				if detail == "unknown" {
					writeJSON(w, http.StatusBadRequest, msError("invalid_grant", 9002313, "Invalid request. Request is malformed or invalid."))
				} else {
					writeJSON(w, http.StatusBadRequest, msError("invalid_grant", 50173, "The provided grant has expired due to it being revoked, a fresh auth token is needed."))
				}
			case failRefreshExpired:
				writeJSON(w, http.StatusBadRequest, msError("invalid_grant", 700082, "The refresh token has expired due to inactivity."))
			case failUnsupportedGrant:
				writeJSON(w, http.StatusBadRequest, msError("unsupported_grant_type", 70003, "The app requested an unsupported grant type '"+detail+"'."))
			case failInvalidRequest:
				writeJSON(w, http.StatusBadRequest, msError("invalid_request", 900144, "The request body must contain the following parameter: "+detail+"."))
			case failRateLimited:
				w.Header().Set("Retry-After", "5")
				writeJSON(w, http.StatusTooManyRequests, msError("temporarily_unavailable", 90055, "The request is being throttled."))
			case failPending, failSlowDown:
				writeJSON(w, http.StatusBadRequest, msError("authorization_pending", 70016, "OAuth 2.0 device flow error. Authorization is pending. Continue polling."))
			case failDenied:
				writeJSON(w, http.StatusBadRequest, msError("authorization_declined", 70019, "The end user denied the authorization request."))
			case failDeviceExpired:
				writeJSON(w, http.StatusBadRequest, msError("expired_token", 70020, "The device code has expired."))
			case failBadDeviceCode:
				writeJSON(w, http.StatusBadRequest, msError("bad_verification_code", 70021, "No matching federated identity record found for presented assertion."))
			}
		},
		success: func(s *Server, w http.ResponseWriter, r *http.Request, req *request, g *grant, m Minted, _ string) {
			var shown []string
			for _, sc := range g.scopes {
				if sc != "offline_access" {
					shown = append(shown, sc)
				}
			}
			life := int(p.accessLifetime(s) / time.Second)
			o := obj{"token_type": "Bearer", "scope": strings.Join(shown, " "), "expires_in": life, "ext_expires_in": life, "access_token": m.AccessToken}
			if m.RefreshToken != "" {
				o["refresh_token"] = m.RefreshToken
			}
			if hasScope(g.scopes, "openid") {
				now := s.now().Unix()
				o["id_token"] = fakeJWT(obj{"iss": s.URL + "/" + s.Options.Tenant + "/v2.0", "aud": s.ClientID, "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ", "oid": "00000000-0000-0000-66f3-3332eca7ea81", "tid": "9188040d-6c67-4c5b-b112-36a304b66dad", "iat": now, "exp": now + 3599})
			}
			writeJSON(w, http.StatusOK, o)
		},
	}
}

func (p microsoft) routes(s *Server, mux *http.ServeMux) {
	spec := p.spec()
	mux.HandleFunc("GET /{tenant}/oauth2/v2.0/authorize", s.serveAuthorize)
	mux.HandleFunc("POST /{tenant}/oauth2/v2.0/token", func(w http.ResponseWriter, r *http.Request) { s.serveToken(w, r, spec) })
	mux.HandleFunc("POST /{tenant}/oauth2/v2.0/devicecode", func(w http.ResponseWriter, r *http.Request) {
		req, err := parse(r)
		if err != nil || req.clientID != s.ClientID {
			writeJSON(w, http.StatusBadRequest, msError("unauthorized_client", 700016, "Application was not found in the directory."))
			return
		}
		scopes := scopeList(req.params.Get("scope"))
		if len(scopes) == 0 {
			writeJSON(w, http.StatusBadRequest, msError("invalid_request", 900144, "The request body must contain the following parameter: 'scope'."))
			return
		}
		user := randFrom("ABCDEFGHJKLMNPQRSTUVWXYZ23456789", 9)
		s.mu.Lock()
		dc, d := s.newDevice(scopes, hasScope(scopes, "offline_access"), user, 900*time.Second, 5)
		s.mu.Unlock()
		verify := s.URL + "/devicelogin"
		writeJSON(w, http.StatusOK, obj{
			"user_code": user, "device_code": dc, "verification_uri": verify,
			"expires_in": 900, "interval": int(d.interval / time.Second),
			"message": "To sign in, use a web browser to open the page " + verify + " and enter the code " + user + " to authenticate.",
		})
	})
}
