package backend

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/backend/oauthclient"
)

// How the engine answers errors, one rule for every path:
//
//   - Bad input is answered by the path file with logical.ErrorResponse: a
//     400 whose message starts with the field it is about. Nothing is
//     stored.
//   - Domain code (issue, refresh, flows, revoke, ...) returns errors.
//     logical.CodedError carries a state the caller must act on (400: the
//     grant is invalid, expired or pending; 429: too many pending flows;
//     503: shutting down) or upstream trouble, mapped by upstreamError
//     below as SPEC's error table says.
//   - Any other error is a 500: storage failures and bugs. Its text never
//     carries a secret: upstream text reaches it only through
//     oauthclient's scrubbing.

// badInput is a domain check's verdict on the request (a field that must
// change); the path file answers it with logical.ErrorResponse.
type badInput struct{ msg string }

func (e *badInput) Error() string { return e.msg }

func badInputf(format string, args ...any) error {
	return &badInput{msg: fmt.Sprintf(format, args...)}
}

// respondBadInput answers a domain error: bad input as a 400 response,
// anything else as the error it is.
func respondBadInput(err error) (*logical.Response, error) {
	var bi *badInput
	if errors.As(err, &bi) {
		return logical.ErrorResponse(bi.msg), nil
	}
	return nil, err
}

// upstreamError turns a failed upstream call into the status the SPEC's
// error table gives. invalid_grant is handled by the caller, which must
// also mark the grant invalid.
func upstreamError(provider string, err error, scopes []string) error {
	if errors.Is(err, errUnknownProvider) {
		return logical.CodedError(http.StatusBadRequest, err.Error())
	}
	e, ok := oauthclient.AsError(err)
	if !ok {
		return fmt.Errorf("provider %q: %w", provider, err)
	}
	switch {
	case e.StatusCode == http.StatusTooManyRequests:
		msg := fmt.Sprintf("provider %q is rate limiting requests (HTTP 429); retry later", provider)
		if e.RetryAfter > 0 {
			msg += fmt.Sprintf(" (Retry-After %s)", e.RetryAfter.Round(time.Second))
		}
		return logical.CodedError(http.StatusTooManyRequests, msg)
	case e.Code == oauthclient.ErrCodeInvalidScope || e.Code == oauthclient.ErrCodeInvalidTarget:
		return logical.CodedError(http.StatusBadRequest, fmt.Sprintf(
			"provider %q rejected the requested scope or resource with %s; scopes asked for: [%s]",
			provider, e.Code, strings.Join(scopes, " ")))
	case e.Code == oauthclient.ErrCodeInvalidClient || e.Code == oauthclient.ErrCodeUnauthorizedClient:
		return logical.CodedError(http.StatusBadGateway, fmt.Sprintf(
			"provider %q rejected this Vault's client (%s): the provider's client settings (client_id, client_secret, client_auth) need fixing", provider, e))
	default:
		return logical.CodedError(http.StatusBadGateway, fmt.Sprintf(
			"provider %q: %s; the call can be retried", provider, e))
	}
}

// revocationIsFinal says whether a failed revocation can never succeed on
// retry: the server does not support revoking that token type.
func revocationIsFinal(err error) bool {
	return errors.Is(err, oauthclient.ErrNoRevocationEndpoint) || errors.Is(err, oauthclient.ErrRevokesWholeGrant) ||
		oauthclient.HasCode(err, oauthclient.ErrCodeUnsupportedTokenType)
}

// detached keeps a request's values but not its cancellation: once a
// refresh is sent, its answer must be read and stored even if the client
// has gone, or a rotated refresh token would be lost.
func detached(ctx context.Context) context.Context {
	return context.WithoutCancel(ctx)
}
