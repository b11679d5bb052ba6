package oauthclient

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode"
)

// Error is an unsuccessful exchange with an upstream endpoint: either a
// transport failure (Err set) or an HTTP answer that was not a success.
type Error struct {
	// Endpoint names the endpoint called: "token", "revocation", ...
	Endpoint string
	// StatusCode is the HTTP status, 0 for transport failures.
	StatusCode int
	// Code is the RFC 6749 §5.2 error code, e.g. "invalid_grant".
	Code string
	// Description is the upstream's error_description, scrubbed of any
	// secret that was part of the request and cut to a safe length.
	Description string
	// RetryAfter is the upstream's Retry-After, when it sent one.
	RetryAfter time.Duration
	// Err is the transport or decoding error, if any.
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s endpoint", e.Endpoint)
	switch {
	case e.Code != "":
		fmt.Fprintf(&b, " returned error %q", e.Code)
		if e.StatusCode != 0 {
			fmt.Fprintf(&b, " (HTTP %d)", e.StatusCode)
		}
		if e.Description != "" {
			fmt.Fprintf(&b, ": %s", e.Description)
		}
	case e.StatusCode != 0:
		fmt.Fprintf(&b, " returned HTTP %d", e.StatusCode)
		if e.Err != nil {
			fmt.Fprintf(&b, ": %v", e.Err)
		}
	case e.Err != nil:
		fmt.Fprintf(&b, " unreachable: %v", e.Err)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Error codes from RFC 6749, RFC 7009, RFC 8628 and RFC 8707.
const (
	ErrCodeInvalidGrant         = "invalid_grant"
	ErrCodeInvalidClient        = "invalid_client"
	ErrCodeUnauthorizedClient   = "unauthorized_client"
	ErrCodeInvalidScope         = "invalid_scope"
	ErrCodeInvalidTarget        = "invalid_target"
	ErrCodeInvalidRequest       = "invalid_request"
	ErrCodeUnsupportedGrantType = "unsupported_grant_type"
	ErrCodeUnsupportedTokenType = "unsupported_token_type"
	ErrCodeAuthorizationPending = "authorization_pending"
	ErrCodeSlowDown             = "slow_down"
	ErrCodeAccessDenied         = "access_denied"
	ErrCodeExpiredToken         = "expired_token"
)

// AsError returns the *Error in err's chain, if any.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// HasCode reports whether err is an upstream error with the given code.
func HasCode(err error, code string) bool {
	e, ok := AsError(err)
	return ok && e.Code == code
}

// IsRateLimited reports whether the upstream answered 429.
func IsRateLimited(err error) bool {
	e, ok := AsError(err)
	return ok && e.StatusCode == http.StatusTooManyRequests
}

// maxDescription bounds what an upstream can push into our errors and logs.
const maxDescription = 200

// scrub removes every secret from an upstream-provided text and makes it a
// short single line of printable characters.
func scrub(s string, secrets []string) string {
	for _, v := range secrets {
		if len(v) >= 4 {
			s = strings.ReplaceAll(s, v, "[redacted]")
		}
	}
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, s)
	if len(s) > maxDescription {
		s = s[:maxDescription] + "..."
	}
	return strings.TrimSpace(s)
}
