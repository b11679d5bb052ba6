// Package oauthclient is a small OAuth 2.0 protocol client: token requests
// (refresh, authorization code, client credentials, device code, token
// exchange), revocation (RFC 7009), introspection (RFC 7662), device
// authorization (RFC 8628), discovery (RFC 8414 / OIDC) and client
// authentication (RFC 6749 §2.3, RFC 7523).
//
// It knows nothing of Vault. It never puts a secret it was given (refresh
// token, access token, client secret, client assertion, code verifier,
// device code) into an error or log: upstream error bodies are reduced to the
// RFC 6749 error code and a description in printable ASCII from which every
// secret, in its raw, URL, base64 and JSON-escaped forms (also inside a
// larger base64 text, such as the HTTP Basic header), and every long
// token-like run are removed. Transport errors are scrubbed the same way and
// do not keep the original error chain.
//
// An OAuth error in a response body is an *Error whatever the HTTP status,
// since some providers (GitHub, Slack) answer errors with 200.
//
// Lifetimes from upstreams are bounded: MaxTokenLifetime for expires_in,
// MaxDeviceFlowLifetime and [MinDeviceInterval, MaxDeviceInterval] for a
// device authorization.
//
// Endpoint addresses are policed at configuration time (CheckEndpointURL), at
// dial time, and for proxied requests on the target before the proxy is used
// (NewHTTPClient).
package oauthclient
