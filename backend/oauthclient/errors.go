package oauthclient

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"mime"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Error is an unsuccessful exchange with an upstream endpoint: either a
// transport failure (Err set) or an HTTP answer that was not a success.
type Error struct {
	// Endpoint names the endpoint called: "token", "revocation", ...
	Endpoint string
	// StatusCode is the HTTP status, 0 for transport failures.
	StatusCode int
	// Code is the RFC 6749 §5.2 error code, e.g. "invalid_grant", whatever
	// the HTTP status was (some providers answer errors with 200). It is
	// passed on as the provider sent it, except the provider-specific codes
	// Config.InvalidGrantCodes maps to invalid_grant. A code that could
	// carry token material (not a plain [A-Za-z0-9_.:-] word) is withheld:
	// Code is empty and Err says so.
	Code string
	// ProviderCode is the server's own code when Config.InvalidGrantCodes
	// mapped it to invalid_grant.
	ProviderCode string
	// Description is the upstream's error_description reduced to printable
	// ASCII, with every secret of the request (in any common encoding) and
	// every long token-like run replaced by "[redacted]", cut to a safe
	// length.
	Description string
	// RetryAfter is the upstream's Retry-After, when it sent one.
	RetryAfter time.Duration
	// Err is the transport or decoding error, if any. Transport errors are
	// reduced to their scrubbed text: they keep Timeout() and
	// errors.Is(context.Canceled / context.DeadlineExceeded) but not the
	// original error chain, which may hold the request.
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s endpoint", e.Endpoint)
	switch {
	case e.Code != "":
		fmt.Fprintf(&b, " returned error %q", e.Code)
		if e.ProviderCode != "" {
			fmt.Fprintf(&b, " (the provider's %q)", e.ProviderCode)
		}
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

// IsInvalidGrant reports whether the upstream answered invalid_grant (on any
// HTTP status): the refresh token, code or device code is dead and retrying
// cannot help. Provider-specific codes for the same condition count when
// Config.InvalidGrantCodes names them.
func IsInvalidGrant(err error) bool { return HasCode(err, ErrCodeInvalidGrant) }

var (
	errWithheldCode = errors.New("upstream error code withheld: not a plain OAuth error code")
	errNotOK        = errors.New(`upstream answered "ok": false without an error code`)
)

// errorBody is an OAuth error found in a response body.
type errorBody struct {
	code, description string
}

// parseErrorBody finds an RFC 6749 §5.2 error in a body of any HTTP status:
// GitHub and Slack answer errors with 200. It reads JSON
// ({"error": ..., "error_description": ...}, and Slack's {"ok": false, ...})
// and the form encoding GitHub uses (error=...&error_description=...).
func parseErrorBody(data []byte, contentType string) (errorBody, bool) {
	data = bytes.TrimSpace(data)
	if len(data) > 0 && data[0] == '{' {
		var raw struct {
			Error            json.RawMessage `json:"error"`
			ErrorDescription json.RawMessage `json:"error_description"`
			OK               json.RawMessage `json:"ok"`
		}
		if json.Unmarshal(data, &raw) != nil {
			return errorBody{}, false
		}
		var b errorBody
		// Non-string values (Google APIs' error objects) are not OAuth errors.
		_ = json.Unmarshal(raw.Error, &b.code)
		_ = json.Unmarshal(raw.ErrorDescription, &b.description)
		if b.code != "" || string(raw.OK) == "false" {
			return b, true
		}
		return errorBody{}, false
	}
	mediaType, _, _ := mime.ParseMediaType(contentType)
	if mediaType == "application/x-www-form-urlencoded" || mediaType == "text/plain" || bytes.HasPrefix(data, []byte("error=")) {
		// ParseQuery keeps what it could parse next to a bad escape.
		vals, _ := url.ParseQuery(string(data))
		if code := vals.Get("error"); code != "" {
			return errorBody{code: code, description: vals.Get("error_description")}, true
		}
	}
	return errorBody{}, false
}

// setUpstream records an upstream error body on e, scrubbed of secrets.
func (e *Error) setUpstream(b errorBody, secrets []string) {
	forms, windows := secretForms(secrets), secretWindows(secrets)
	switch {
	case b.code == "":
		e.Err = errNotOK
	case isPlainCode(b.code, forms) && !overlaps(b.code, windows):
		e.Code = b.code
	default:
		e.Err = errWithheldCode
	}
	e.Description = scrubText(b.description, forms, windows, maxDescription)
}

// maxCode bounds an error code; RFC codes are at most 25 characters.
const maxCode = 64

// isPlainCode reports whether an upstream error code can be shown as is: a
// word of [A-Za-z0-9_.:-] with no token-like run and no secret in it.
func isPlainCode(code string, forms []string) bool {
	if code == "" || len(code) > maxCode {
		return false
	}
	for i := 0; i < len(code); i++ {
		c := code[i]
		if !isAlnum(c) && !strings.ContainsRune("_.:-", rune(c)) {
			return false
		}
	}
	for _, part := range strings.Split(code, "_") {
		if len(part) >= minTokenRun {
			return false
		}
	}
	return !containsAny(code, forms)
}

// transportFailure is a transport error reduced to scrubbed text. It keeps
// what callers test for (timeouts, cancellation) but not the original error,
// whose chain may hold the request, its URL or upstream bytes.
type transportFailure struct {
	msg     string
	timeout bool
	cause   error // context.Canceled, context.DeadlineExceeded or nil
}

func (e *transportFailure) Error() string { return e.msg }
func (e *transportFailure) Timeout() bool { return e.timeout }
func (e *transportFailure) Unwrap() error { return e.cause }

// maxTransportMessage bounds a transport error's text.
const maxTransportMessage = 300

// transportError scrubs a transport failure. *url.Error's URL is dropped:
// the message stays useful and never depends on what the URL might carry.
// Go's own messages can quote upstream bytes (a malformed status line), so
// the text is scrubbed like an upstream description.
func transportError(err error, secrets []string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		msg = ue.Err.Error()
	}
	// Go quotes the upstream bytes it could not parse (%q): what comes
	// from the upstream is cut off, whatever its escaping.
	if i := strings.IndexByte(msg, '"'); i >= 0 {
		msg = msg[:i] + "(upstream text withheld)"
	}
	f := &transportFailure{msg: scrubText(msg, secretForms(secrets), secretWindows(secrets), maxTransportMessage)}
	if f.msg == "" {
		f.msg = "transport error (details withheld)"
	}
	var ne net.Error
	f.timeout = errors.As(err, &ne) && ne.Timeout()
	switch {
	case errors.Is(err, context.Canceled):
		f.cause = context.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		f.cause = context.DeadlineExceeded
	}
	return f
}

// maxDescription bounds what an upstream can push into our errors and logs.
const maxDescription = 200

// minTokenRun is the length from which a run of token characters is taken
// for a token (or a long piece of one) and redacted.
const minTokenRun = 16

const redactedText = "[redacted]"

// scrub makes upstream-provided text safe for errors and logs: every secret
// of the request is removed in every encoding an upstream is known to echo,
// long token-like runs (partial echoes, unknown encodings) are redacted, and
// the result is a short line of printable ASCII. It never contains a secret
// form: if one would remain, the text is dropped.
func scrub(s string, secrets []string, limit int) string {
	return scrubText(s, secretForms(secrets), secretWindows(secrets), limit)
}

// scrubText is scrubForms, then the partial-echo check: text that repeats
// windowLen characters of a secret in any escaping (a piece of it, quoted
// or escaped in a way no form foresaw) is withheld whole.
func scrubText(s string, forms []string, windows map[string]bool, limit int) string {
	if overlaps(s, windows) {
		return withheldText
	}
	s = scrubForms(s, forms, limit)
	if overlaps(s, windows) {
		return withheldText
	}
	return s
}

const withheldText = "(withheld: it repeated part of the request's secrets)"

// windowLen is how many letters and digits of a secret, in order, make a
// partial echo. Ten random characters do not occur in prose by chance.
const windowLen = 10

// escapeRE matches the escapes an echo may wrap around a secret's
// characters: JSON and Go \u and \x escapes (with any number of
// backslashes), percent-encoding and HTML character references.
var escapeRE = regexp.MustCompile(`\\+u[0-9a-fA-F]{4}|\\+x[0-9a-fA-F]{2}|%[0-9a-fA-F]{2}|&#?[A-Za-z0-9]+;`)

// letters reduces text to its lower-case letters and digits once escapes
// are removed: what survives any quoting of the same characters.
func letters(s string) string {
	for i := 0; i < 4; i++ {
		next := escapeRE.ReplaceAllString(s, "")
		if next == s {
			break
		}
		s = next
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := toLowerASCII(s[i])
		if 'a' <= c && c <= 'z' || '0' <= c && c <= '9' {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// secretWindows returns every windowLen run of each secret's letters. A
// value that is only the HTTP Basic pairing of the client id with a secret
// (id:secret) is left out: its id is public and names itself in ordinary
// descriptions, and its secret part is in the list on its own.
func secretWindows(secrets []string) map[string]bool {
	windows := map[string]bool{}
	for _, v := range secrets {
		if isBasicPairing(v, secrets) {
			continue
		}
		l := letters(v)
		for i := 0; i+windowLen <= len(l); i++ {
			windows[l[i:i+windowLen]] = true
		}
	}
	return windows
}

func isBasicPairing(v string, secrets []string) bool {
	for _, w := range secrets {
		if w != "" && w != v && strings.HasSuffix(v, ":"+url.QueryEscape(w)) {
			return true
		}
	}
	return false
}

// overlaps reports whether text holds any window of a secret.
func overlaps(text string, windows map[string]bool) bool {
	if len(windows) == 0 {
		return false
	}
	l := letters(text)
	for i := 0; i+windowLen <= len(l); i++ {
		if windows[l[i:i+windowLen]] {
			return true
		}
	}
	return false
}

func scrubForms(s string, forms []string, limit int) string {
	// Replace before and after mapping control characters: a secret may
	// itself contain one, and mapping may reveal a form split by one.
	s = replaceForms(s, forms)
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, s)
	s = replaceForms(s, forms)
	s = userinfoRE.ReplaceAllString(s, "${1}"+redactedText+"@")
	s = redactTokenRuns(s)
	s = strings.Map(func(r rune) rune {
		if r >= 0x20 && r <= 0x7e {
			return r
		}
		return '?'
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > limit {
		s = s[:limit] + "..."
	}
	if containsAny(s, forms) {
		// Only reachable with a pathological secret (one that the rewriting
		// above recreates); saying nothing is the safe answer.
		return ""
	}
	return s
}

// userinfoRE finds URL credentials (scheme://user:pass@).
var userinfoRE = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@\s]*@`)

func replaceForms(s string, forms []string) string {
	for _, f := range forms {
		s = strings.ReplaceAll(s, f, redactedText)
	}
	return s
}

func containsAny(s string, forms []string) bool {
	for _, f := range forms {
		if strings.Contains(s, f) {
			return true
		}
	}
	return false
}

// minSecret is the shortest secret scrubbed: shorter ones would match
// ordinary words.
const minSecret = 4

// secretForms returns every form in which an upstream might echo one of the
// secrets, longest first so that a longer form is replaced whole.
func secretForms(secrets []string) []string {
	var forms []string
	add := func(f string) {
		if len(f) >= minSecret {
			forms = append(forms, f)
		}
	}
	for _, v := range secrets {
		if len(v) < minSecret {
			continue
		}
		q, p := url.QueryEscape(v), url.PathEscape(v)
		for _, f := range []string{v, q, p, lowerHex(q), lowerHex(p), html.EscapeString(v)} {
			add(f)
		}
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
			add(enc.EncodeToString([]byte(v)))
		}
		// The secret, or its form encoding (HTTP Basic), inside a larger
		// base64 text.
		for _, w := range []string{v, q} {
			forms = append(forms, base64Cores(w, base64.RawStdEncoding)...)
			forms = append(forms, base64Cores(w, base64.RawURLEncoding)...)
		}
		for _, f := range jsonForms(v) {
			add(f)
		}
	}
	slices.SortFunc(forms, func(a, b string) int { return len(b) - len(a) })
	return slices.Compact(forms)
}

func lowerHex(escaped string) string {
	b := []byte(escaped)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' {
			b[i+1], b[i+2] = toLowerASCII(b[i+1]), toLowerASCII(b[i+2])
		}
	}
	return string(b)
}

func toLowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// minCore is the shortest base64 core worth matching.
const minCore = 8

// base64Cores returns, for each of the three byte alignments v can have
// inside a longer text, the base64 characters that depend on v's bytes
// alone: whatever surrounds v, its base64 encoding contains them.
func base64Cores(v string, enc *base64.Encoding) []string {
	var cores []string
	for k := 0; k < 3; k++ {
		buf := make([]byte, k+len(v))
		copy(buf[k:], v)
		e := enc.EncodeToString(buf)
		start := (8*k + 5) / 6      // characters holding prefix bits
		end := 8 * (k + len(v)) / 6 // characters made of whole 6-bit groups
		if end-start >= minCore && end <= len(e) {
			cores = append(cores, e[start:end])
		}
	}
	return cores
}

// jsonForms returns v as JSON encoders write it inside a string: Go
// (HTML-escaping or not), Python (ASCII only), PHP (ASCII only and "\/"),
// with lower- or upper-case \u escapes.
func jsonForms(v string) []string {
	var out []string
	for flags := 0; flags < 16; flags++ {
		out = append(out, jsonEscape(v, flags&1 != 0, flags&2 != 0, flags&4 != 0, flags&8 != 0))
	}
	return out
}

func jsonEscape(v string, htmlSafe, asciiOnly, escapeSlash, upperHex bool) string {
	format := `\u%04x`
	if upperHex {
		format = `\u%04X`
	}
	var b strings.Builder
	for _, r := range v {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '/' && escapeSlash:
			b.WriteString(`\/`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20, asciiOnly && r > 0x7e,
			htmlSafe && (r == '<' || r == '>' || r == '&' || r == '\u2028' || r == '\u2029'):
			if r > 0xffff {
				r -= 0x10000
				fmt.Fprintf(&b, format+format, 0xd800+(r>>10)&0x3ff, 0xdc00+r&0x3ff)
			} else {
				fmt.Fprintf(&b, format, r)
			}
		case r == utf8.RuneError:
			fmt.Fprintf(&b, format, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// isTokenChar: the characters of tokens and of their URL, base64 and JSON
// encodings.
func isTokenChar(c byte) bool {
	return isAlnum(c) || strings.IndexByte("._~+/=%-\\_", c) >= 0
}

// redactTokenRuns replaces every run of at least minTokenRun token
// characters: a token, or a long piece of one, in whatever encoding. Host
// names are kept so that descriptions and transport errors stay useful.
func redactTokenRuns(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		if !isTokenChar(s[i]) {
			b.WriteByte(s[i])
			i++
			continue
		}
		j := i
		for j < len(s) && isTokenChar(s[j]) {
			j++
		}
		if run := s[i:j]; len(run) >= minTokenRun && !looksLikeHostname(run) {
			b.WriteString(redactedText)
		} else {
			b.WriteString(run)
		}
		i = j
	}
	return b.String()
}

// looksLikeHostname: lower-case DNS labels shorter than a token run, the
// last one alphabetic like a top-level domain. Tokens are mixed case or end
// in digits, and a lower-case one still has a label of minTokenRun or more.
func looksLikeHostname(run string) bool {
	labels := strings.Split(strings.TrimSuffix(run, "."), ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if l == "" || len(l) >= minTokenRun {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	tld := labels[len(labels)-1]
	for i := 0; i < len(tld); i++ {
		if tld[i] < 'a' || tld[i] > 'z' {
			return false
		}
	}
	return true
}
