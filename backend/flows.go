package backend

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/backend/oauthclient"
)

// The authorization flows: a pending authorization waits for a user, who
// either returns through callback (code flow, PKCE S256) or approves a
// device code (RFC 8628, polled by the worker). Their secrets are sealed.

// How long a started authorization-code flow may take, and the longest a
// device flow may take whatever the provider says.
const (
	authorizationLifetime = 10 * time.Minute
	maxDeviceLifetime     = oauthclient.MaxDeviceFlowLifetime
	// maxPendingPerGrant bounds the code flows one grant may have open, so
	// one caller cannot fill the mount's max_pending_authorizations.
	maxPendingPerGrant = 5
	// pendingGrace is how long after its flow's end a pending grant is
	// given up as invalid when no flow completed it (a crash between the
	// state's use and the grant's update).
	pendingGrace = time.Minute
)

const (
	pendingCode   = "code"
	pendingDevice = "device"
)

type pendingAuth struct {
	Kind        string    `json:"kind"`
	Grant       string    `json:"grant"`
	GrantID     string    `json:"grant_id"`
	Provider    string    `json:"provider"`
	RedirectURI string    `json:"redirect_uri,omitempty"`
	Scopes      []string  `json:"scopes,omitempty"`
	Secret      *sealed   `json:"secret"` // code verifier, or device code
	ExpiresAt   time.Time `json:"expires_at"`
	Interval    int64     `json:"interval,omitempty"` // seconds, device flow
	NextPoll    time.Time `json:"next_poll,omitempty"`
}

// pendingKeyForState hashes the state: storage keys never hold it.
func pendingKeyForState(state string) string {
	sum := sha256.Sum256([]byte(state))
	return "code-" + hex.EncodeToString(sum[:])
}

func pendingKeyForDevice(grant string) string { return "device-" + grant }

func (b *backend) lockPending(key string) (unlock func()) {
	return b.recordLocks.Lock(pendingPath(key))
}

// flowRequest is what authorize and device were asked for.
type flowRequest struct {
	name, provider, owner          string
	scopes                         []string
	scopesSet                      bool
	maxAge, idleTimeout, keepAlive time.Duration
}

// flowGrant is the grant a flow completes and what the flow asks for.
type flowGrant struct {
	grant    *grantEntry
	provider *providerHandle
	scopes   []string
	creating bool
}

// startFlow locks the grant a flow completes, loads or creates it (in
// memory) and runs start with it.
func (b *backend) startFlow(ctx context.Context, s logical.Storage, fr *flowRequest, start func(*flowGrant) (*logical.Response, error)) (*logical.Response, error) {
	ctx = detached(ctx)
	unlock := b.lockGrant(fr.name)
	defer unlock()
	g, err := b.loadGrantLocked(ctx, s, fr.name)
	if err != nil {
		return nil, err
	}
	creating := g == nil
	switch {
	case creating && fr.provider == "":
		return nil, badInputf("provider is required to authorize a new grant")
	case creating:
		g = newGrant(fr.name, fr.provider, fr.owner, b.now())
		g.MaxAge, g.IdleTimeout, g.KeepAlive = fr.maxAge, fr.idleTimeout, fr.keepAlive
	case fr.provider != "" && fr.provider != g.Provider:
		return nil, badInputf("provider: grant %q belongs to provider %q", fr.name, g.Provider)
	case g.Status == statusRevoking:
		return nil, badInputf("grant %q is being revoked", fr.name)
	}
	h, err := b.provider(ctx, s, g.Provider)
	if err != nil {
		return nil, badInputf("provider: %s", err)
	}
	fg := &flowGrant{grant: g, provider: h, creating: creating, scopes: g.Scopes}
	if fr.scopesSet {
		fg.scopes = fr.scopes
	} else if len(fg.scopes) == 0 {
		fg.scopes = h.entry.Scopes
	}
	if creating {
		g.Scopes = fg.scopes
	}
	return start(fg)
}

func randomState() string {
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(buf)
}

// checkPendingCaps refuses a new flow before anything is sent upstream
// when the mount or the grant has too many pending.
func (b *backend) checkPendingCaps(ctx context.Context, s logical.Storage, cfg *configEntry, grant string) error {
	keys, err := s.List(ctx, pendingPrefix)
	if err != nil {
		return err
	}
	if len(keys) >= cfg.MaxPendingAuthorizations {
		return logical.CodedError(http.StatusTooManyRequests, fmt.Sprintf("%d authorizations are pending (max_pending_authorizations); try again later", len(keys)))
	}
	n := 0
	for _, key := range keys {
		if !strings.HasPrefix(key, "code-") {
			continue
		}
		p, err := getPending(ctx, s, key)
		if err != nil {
			return err
		}
		if p != nil && p.Grant == grant {
			n++
		}
	}
	if n >= maxPendingPerGrant {
		return logical.CodedError(http.StatusTooManyRequests, fmt.Sprintf("grant %q has %d authorizations pending; complete one or wait for them to expire (%s)", grant, n, authorizationLifetime))
	}
	return nil
}

// beginPending stores the grant a new flow creates as pending (an existing
// grant keeps working until the flow replaces its refresh token) and the
// flow's pending record with its sealed secret.
func (b *backend) beginPending(ctx context.Context, s logical.Storage, fg *flowGrant, key, secret string, p *pendingAuth) error {
	if fg.creating {
		fg.grant.markPending(p.ExpiresAt.Add(pendingGrace))
		if err := b.saveGrantLocked(ctx, s, fg.grant); err != nil {
			return err
		}
	}
	unlock := b.lockPending(key)
	defer unlock()
	return b.storeSealed(ctx, s, pendingPath(key), p, func(kr *keyring) (err error) {
		p.Secret, err = kr.seal(secret, pendingAAD(key))
		return err
	})
}

// authorization is what authorize returns.
type authorization struct {
	url, state string
	expiresAt  time.Time
}

func (b *backend) startAuthorization(ctx context.Context, s logical.Storage, cfg *configEntry, fg *flowGrant) (*authorization, error) {
	g, h := fg.grant, fg.provider
	if err := b.checkPendingCaps(ctx, s, cfg, g.Name); err != nil {
		return nil, err
	}
	state, verifier := randomState(), oauthclient.NewCodeVerifier()
	expires := b.now().Add(authorizationLifetime).UTC()
	key := pendingKeyForState(state)
	err := b.beginPending(ctx, s, fg, key, verifier, &pendingAuth{
		Kind: pendingCode, Grant: g.Name, GrantID: g.ID, Provider: g.Provider,
		RedirectURI: cfg.RedirectURI, Scopes: fg.scopes, ExpiresAt: expires,
	})
	if err != nil {
		return nil, err
	}
	return &authorization{
		url:       h.client.AuthCodeURL(cfg.RedirectURI, state, verifier, fg.scopes, h.entry.authParams()),
		state:     state,
		expiresAt: expires,
	}, nil
}

func (b *backend) startDeviceFlow(ctx context.Context, s logical.Storage, cfg *configEntry, fg *flowGrant) (*oauthclient.DeviceAuthorization, error) {
	g, h := fg.grant, fg.provider
	if err := b.checkPendingCaps(ctx, s, cfg, g.Name); err != nil {
		return nil, err
	}
	da, err := h.client.StartDevice(ctx, fg.scopes)
	if err != nil {
		return nil, upstreamError(g.Provider, err, fg.scopes)
	}
	now := b.now()
	if !da.Expiry.After(now) {
		da.Expiry = now.Add(authorizationLifetime) // expires_in missing
	}
	if da.Expiry.After(now.Add(maxDeviceLifetime)) {
		da.Expiry = now.Add(maxDeviceLifetime)
	}
	key := pendingKeyForDevice(g.Name)
	err = b.beginPending(ctx, s, fg, key, da.DeviceCode, &pendingAuth{
		Kind: pendingDevice, Grant: g.Name, GrantID: g.ID, Provider: g.Provider,
		Scopes: fg.scopes, ExpiresAt: da.Expiry.UTC(), Interval: int64(da.Interval / time.Second),
		NextPoll: now.Add(da.Interval),
	})
	if err != nil {
		return nil, err
	}
	b.background.wake()
	return da, nil
}

// callbackParams are what the browser brought back.
type callbackParams struct {
	state, code, upstreamError, iss string
}

// completeCallback completes an authorization-code flow. The state,
// unguessable and single-use, is what authorizes it: it is consumed under
// its record's lock, so two callbacks with one state never both exchange.
func (b *backend) completeCallback(ctx context.Context, s logical.Storage, cp callbackParams) (*grantEntry, string, error) {
	ctx = detached(ctx)
	key := pendingKeyForState(cp.state)
	p, err := b.consumePending(ctx, s, key)
	if err != nil {
		return nil, "", err
	}
	if p == nil || p.Kind != pendingCode {
		return nil, "", logical.CodedError(http.StatusBadRequest, "state: no pending authorization has this state (unknown, used or expired)")
	}
	if !b.now().Before(p.ExpiresAt) {
		b.failFlow(ctx, s, p, "the authorization was not completed in time; start it again")
		return nil, "", logical.CodedError(http.StatusBadRequest, "state: the authorization expired; start it again")
	}
	h, err := b.provider(ctx, s, p.Provider)
	if err != nil {
		b.failFlow(ctx, s, p, fmt.Sprintf("provider %q is gone", p.Provider))
		return nil, "", upstreamError(p.Provider, err, nil)
	}
	// RFC 9207: a provider that names itself must be the one we sent the
	// user to (mix-up defense); one that says it always does must.
	iss := strings.TrimSuffix(cp.iss, "/")
	switch {
	case iss != "" && h.entry.Issuer != "" && iss != h.entry.Issuer:
		b.failFlow(ctx, s, p, "the authorization response came from another issuer")
		return nil, "", logical.CodedError(http.StatusBadRequest, fmt.Sprintf("iss: the response names issuer %q, not provider %q's", scrubParam(cp.iss), p.Provider))
	case iss == "" && h.entry.IssRequired:
		b.failFlow(ctx, s, p, "the authorization response had no iss although the provider always sends it")
		return nil, "", logical.CodedError(http.StatusBadRequest, fmt.Sprintf("iss: provider %q sends iss in authorization responses (RFC 9207) and this one has none", p.Provider))
	}
	if cp.upstreamError != "" {
		why := fmt.Sprintf("the provider refused the authorization (%s)", scrubParam(cp.upstreamError))
		b.failFlow(ctx, s, p, why)
		return nil, "", logical.CodedError(http.StatusBadRequest, why)
	}
	if cp.code == "" {
		b.failFlow(ctx, s, p, "the authorization response had no code")
		return nil, "", logical.CodedError(http.StatusBadRequest, "code is required")
	}
	kr, err := b.sealingKeys(ctx, s)
	if err != nil {
		return nil, "", err
	}
	verifier, err := kr.open(p.Secret, pendingAAD(key))
	if err != nil {
		return nil, "", err
	}
	tok, err := h.client.ExchangeCode(ctx, cp.code, p.RedirectURI, verifier)
	if err != nil {
		mapped := upstreamError(p.Provider, err, nil)
		if oauthclient.IsInvalidGrant(err) {
			// A bad or used code is the user's flow failing, not upstream trouble.
			mapped = logical.CodedError(http.StatusBadRequest, fmt.Sprintf(
				"code: provider %q rejected the authorization code (invalid_grant); start the authorization again", p.Provider))
		}
		b.failFlow(ctx, s, p, mapped.Error())
		return nil, "", mapped
	}
	return b.completeGrant(ctx, s, p, tok)
}

// consumePending loads and deletes a pending record as one step.
func (b *backend) consumePending(ctx context.Context, s logical.Storage, key string) (*pendingAuth, error) {
	unlock := b.lockPending(key)
	defer unlock()
	p, err := getPending(ctx, s, key)
	if err != nil || p == nil {
		return nil, err
	}
	if err := s.Delete(ctx, pendingPath(key)); err != nil {
		return nil, err
	}
	return p, nil
}

// completeGrant stores the refresh token a finished flow produced; the
// token it replaces, if any, is queued for revocation upstream.
func (b *backend) completeGrant(ctx context.Context, s logical.Storage, p *pendingAuth, tok *oauthclient.Token) (*grantEntry, string, error) {
	var warning string
	h, err := b.provider(ctx, s, p.Provider)
	if err != nil {
		return nil, "", upstreamError(p.Provider, err, nil)
	}
	g, err := b.updateGrant(ctx, s, p.Grant, func(g *grantEntry) error {
		if g.ID != p.GrantID {
			return logical.CodedError(http.StatusBadRequest, fmt.Sprintf("grant %q was deleted or re-created while its authorization was pending; start again", p.Grant))
		}
		if tok.RefreshToken == "" {
			why := fmt.Sprintf("provider %q returned no refresh token; request offline access (e.g. the offline_access scope)", p.Provider)
			g.failFlow(why)
			return keepAndFail(logical.CodedError(http.StatusBadRequest, fmt.Sprintf("grant %q: %s", g.Name, why)))
		}
		if err := b.queueReplaced(ctx, s, g); err != nil {
			return err
		}
		g.activate(tok.RefreshToken, tok.RefreshExpiry, h.entry.binding(), b.now())
		if w := g.attachSubject(tok.Subject); w != "" {
			warning = w
		}
		switch {
		case tok.ScopeReturned:
			g.Scopes = normalizeScopes(tok.Scopes)
		case len(p.Scopes) > 0:
			g.Scopes = p.Scopes
		}
		return nil
	})
	if isNoGrant(err) {
		return nil, "", logical.CodedError(http.StatusBadRequest, fmt.Sprintf("grant %q was deleted while its authorization was pending; start again", p.Grant))
	}
	if err != nil {
		return nil, "", err
	}
	b.lifecycle(eventAuthorized, g, p.Kind+" flow completed")
	if warning != "" {
		b.logger.Warn("grant re-authorized by another upstream subject", "grant", g.Name, "provider", p.Provider)
	}
	return g, warning, nil
}

// failFlow records why a flow failed on its grant.
func (b *backend) failFlow(ctx context.Context, s logical.Storage, p *pendingAuth, why string) {
	_, err := b.updateGrant(ctx, s, p.Grant, func(g *grantEntry) error {
		if g.ID != p.GrantID {
			return errUnchanged
		}
		g.failFlow(why)
		return nil
	})
	if err != nil && !isNoGrant(err) && err != errUnchanged {
		b.logger.Warn("recording a failed authorization failed", "grant", p.Grant, "error", err)
	}
}

// advancePending ends a flow that ran out of time or polls a device flow
// that is due; it returns when the record next needs a look.
func (b *backend) advancePending(ctx context.Context, s logical.Storage, key string) time.Time {
	p, err := getPending(ctx, s, key)
	if err != nil || p == nil {
		return time.Time{}
	}
	now := b.now()
	if !now.Before(p.ExpiresAt) {
		if p, err := b.consumePending(ctx, s, key); err == nil && p != nil {
			b.failFlow(ctx, s, p, "the authorization was not completed in time; start it again")
		}
		return time.Time{}
	}
	if p.Kind != pendingDevice {
		return time.Time{}
	}
	if now.Before(p.NextPoll) {
		return p.NextPoll
	}
	return b.pollDevice(ctx, s, key, p)
}

// pollDevice asks the token endpoint once whether the user has approved
// (RFC 8628 §3.4-3.5) and returns the next poll time, zero when done.
func (b *backend) pollDevice(ctx context.Context, s logical.Storage, key string, p *pendingAuth) time.Time {
	tok, err := b.redeemDeviceCode(ctx, s, key, p)
	switch {
	case err == nil:
		if done, cerr := b.consumePending(ctx, s, key); cerr != nil || done == nil {
			return time.Time{} // another poll finished it
		}
		if _, _, err := b.completeGrant(ctx, s, p, tok); err != nil {
			b.logger.Warn("device flow could not complete the grant", "grant", p.Grant, "error", err)
		}
		return time.Time{}
	case oauthclient.HasCode(err, oauthclient.ErrCodeAuthorizationPending):
	case oauthclient.HasCode(err, oauthclient.ErrCodeSlowDown):
		// RFC 8628 §3.5, within the client's bound on intervals.
		p.Interval = min(p.Interval+5, int64(oauthclient.MaxDeviceInterval/time.Second))
	case oauthclient.HasCode(err, oauthclient.ErrCodeAccessDenied), oauthclient.HasCode(err, oauthclient.ErrCodeExpiredToken),
		// Entra ID's word for access_denied; GitHub's for an expired code.
		oauthclient.HasCode(err, "authorization_declined"), oauthclient.HasCode(err, "expired_token"), oauthclient.HasCode(err, "bad_verification_code"):
		if done, _ := b.consumePending(ctx, s, key); done != nil {
			b.failFlow(ctx, s, p, "the device authorization was denied or expired upstream; start it again")
		}
		return time.Time{}
	default:
		b.logger.Warn("device flow poll failed; will poll again", "grant", p.Grant, "error", err)
	}
	p.NextPoll = b.now().Add(time.Duration(max(p.Interval, 1)) * time.Second)
	unlock := b.lockPending(key)
	defer unlock()
	if cur, err := getPending(ctx, s, key); err != nil || cur == nil {
		return time.Time{} // consumed meanwhile
	}
	if err := b.storeSealed(ctx, s, pendingPath(key), p, nil); err != nil {
		b.logger.Warn("storing device flow state failed", "grant", p.Grant, "error", err)
	}
	return p.NextPoll
}

func (b *backend) redeemDeviceCode(ctx context.Context, s logical.Storage, key string, p *pendingAuth) (*oauthclient.Token, error) {
	h, err := b.provider(ctx, s, p.Provider)
	if err != nil {
		return nil, err
	}
	kr, err := b.sealingKeys(ctx, s)
	if err != nil {
		return nil, err
	}
	deviceCode, err := kr.open(p.Secret, pendingAAD(key))
	if err != nil {
		return nil, err
	}
	return h.client.PollDevice(ctx, deviceCode)
}

// scrubParam keeps a browser-supplied error code short and printable.
func scrubParam(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x21 || r > 0x7e {
			return -1
		}
		return r
	}, s)
	if len(s) > 64 {
		s = s[:64]
	}
	return s
}

// grantWrite is a validated write of grants/NAME: metadata, and at most
// one way to a new refresh token (an import or a code to exchange).
type grantWrite struct {
	name, provider, caller         string
	refreshToken, code             string
	redirectURI, codeVerifier      string
	scopes                         *[]string
	maxAge, idleTimeout, keepAlive *time.Duration
	owner                          *string
	creating, changeOwner          bool
}

// writeGrant creates or updates a grant; a new refresh token replaces the
// old one, which is queued for revocation upstream.
// Its errors are bad input (badInput) or state; it returns warnings.
func (b *backend) writeGrant(ctx context.Context, s logical.Storage, gw *grantWrite) (*grantEntry, []string, error) {
	var warnings []string
	ctx = detached(ctx) // a code exchange's result must be stored
	unlock := b.lockGrant(gw.name)
	defer unlock()

	g, err := b.loadGrantLocked(ctx, s, gw.name)
	if err != nil {
		return nil, nil, err
	}
	creating := g == nil
	newToken := gw.refreshToken != "" || gw.code != ""
	switch {
	case creating && !gw.creating:
		return nil, nil, badInputf("grant %q does not exist", gw.name)
	case creating && !newToken:
		return nil, nil, badInputf("refresh_token or code is required to create a grant")
	case creating:
		g = newGrant(gw.name, gw.provider, gw.caller, b.now())
	case g.Status == statusRevoking:
		return nil, nil, badInputf("grant %q is being revoked; wait for it to finish or delete it with force=true", gw.name)
	case gw.provider != "" && gw.provider != g.Provider:
		return nil, nil, badInputf("provider: a grant's provider cannot change; delete the grant and create it again")
	}
	if g.Provider == "" {
		return nil, nil, badInputf("provider is required")
	}
	if gw.scopes != nil {
		g.Scopes = *gw.scopes
	}
	for _, f := range []struct {
		v   *time.Duration
		dst *time.Duration
	}{{gw.maxAge, &g.MaxAge}, {gw.idleTimeout, &g.IdleTimeout}, {gw.keepAlive, &g.KeepAlive}} {
		if f.v != nil {
			*f.dst = *f.v
		}
	}
	if gw.owner != nil && *gw.owner != g.OwnerEntityID {
		if !creating && !gw.changeOwner {
			return nil, nil, badInputf("owner_entity_id: changing the owner of an existing grant needs change_owner=true")
		}
		if !creating {
			b.logger.Warn("grant owner changed", "grant", g.Name, "from", g.OwnerEntityID, "to", *gw.owner, "by", gw.caller)
		}
		g.OwnerEntityID = *gw.owner
	}

	h, err := b.provider(ctx, s, g.Provider)
	if err != nil {
		if creating {
			return nil, nil, badInputf("provider: %s", err)
		}
		return nil, nil, err
	}
	refreshToken, subject := gw.refreshToken, ""
	var refreshExpiry time.Time // unknown for an imported token
	if gw.code != "" {
		tok, err := h.client.ExchangeCode(ctx, gw.code, gw.redirectURI, gw.codeVerifier)
		if err != nil {
			if oauthclient.IsInvalidGrant(err) {
				return nil, nil, logical.CodedError(http.StatusBadRequest, fmt.Sprintf(
					"code: provider %q rejected the authorization code (invalid_grant); it may be expired, used, or issued for another redirect_uri or code_verifier", g.Provider))
			}
			return nil, nil, upstreamError(g.Provider, err, g.Scopes)
		}
		if tok.RefreshToken == "" {
			return nil, nil, badInputf("code: provider %q returned no refresh token; request offline access (e.g. the offline_access scope) when authorizing", g.Provider)
		}
		refreshToken, subject, refreshExpiry = tok.RefreshToken, tok.Subject, tok.RefreshExpiry
		if tok.ScopeReturned {
			g.Scopes = normalizeScopes(tok.Scopes)
		}
	} else if refreshToken != "" {
		subject = b.introspectSubject(ctx, h, refreshToken)
	}
	if refreshToken != "" {
		if !creating {
			if err := b.queueReplaced(ctx, s, g); err != nil {
				return nil, nil, err
			}
		}
		g.activate(refreshToken, refreshExpiry, h.entry.binding(), b.now())
		if w := g.attachSubject(subject); w != "" {
			b.logger.Warn("grant re-authorized by another upstream subject", "grant", g.Name, "provider", g.Provider)
			warnings = append(warnings, w)
		}
	}
	if err := b.saveGrantLocked(ctx, s, g); err != nil {
		return nil, nil, err
	}
	switch {
	case gw.code != "":
		b.lifecycle(eventAuthorized, g, "authorization code exchanged")
	case refreshToken != "":
		b.lifecycle(eventAuthorized, g, "refresh token imported")
	}
	return g, warnings, nil
}

// introspectSubject asks the provider who an imported refresh token
// belongs to, where it can say (RFC 7662 sub); "" otherwise. The token
// goes only to the provider's own introspection endpoint.
func (b *backend) introspectSubject(ctx context.Context, h *providerHandle, refreshToken string) string {
	if h.client.Endpoints().Introspection == "" {
		return ""
	}
	info, err := h.client.Introspect(ctx, refreshToken, oauthclient.HintRefreshToken)
	if err != nil || !info.Active {
		return ""
	}
	return info.Subject
}
