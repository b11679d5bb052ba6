// Package oauthclient is a small OAuth 2.0 protocol client: token requests
// (refresh, authorization code, client credentials, device code, token
// exchange), revocation (RFC 7009), introspection (RFC 7662), device
// authorization (RFC 8628), discovery (RFC 8414 / OIDC) and client
// authentication (RFC 6749 §2.3, RFC 7523).
//
// It knows nothing of Vault. It never puts a secret it was given (refresh
// token, client secret, private key, code verifier) into an error or log:
// upstream error bodies are reduced to the RFC 6749 error code and a scrubbed
// description.
package oauthclient
