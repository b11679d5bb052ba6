package backend

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/backend/oauthclient"
)

// flowFields are what authorize and device take: the grant to create or
// re-authorize and its settings.
func flowFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"name":            {Type: framework.TypeLowerCaseString, Description: "Name of the grant.", Required: true},
		"provider":        {Type: framework.TypeLowerCaseString, Description: "Provider to authorize at. Required for a new grant."},
		"scopes":          {Type: framework.TypeCommaStringSlice, Description: "Scopes to ask for; defaults to the grant's, then the provider's."},
		"max_age":         {Type: framework.TypeDurationSecond, Description: "Absolute lifetime of a new grant."},
		"idle_timeout":    {Type: framework.TypeDurationSecond, Description: "Idle timeout of a new grant."},
		"keep_alive":      {Type: framework.TypeDurationSecond, Description: "Background refresh interval of a new grant."},
		"owner_entity_id": {Type: framework.TypeString, Description: "Owner of a new grant; defaults to the caller's entity."},
	}
}

func pathGrantFlows(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern:      "grants/" + framework.GenericNameRegex("name") + "/authorize$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: operationPrefix, OperationVerb: "authorize", OperationSuffix: "grant"},
			Fields:       flowFields(),
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: forwarded(b.flowHandler(b.startAuthorization)),
			},
			HelpSynopsis:    "Start an authorization-code flow (PKCE S256) for a grant.",
			HelpDescription: authorizeHelp,
		},
		{
			Pattern:      "grants/" + framework.GenericNameRegex("name") + "/device$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: operationPrefix, OperationVerb: "authorize", OperationSuffix: "grant-device"},
			Fields:       flowFields(),
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: forwarded(b.flowHandler(b.startDeviceFlow)),
			},
			HelpSynopsis:    "Start a device authorization flow (RFC 8628) for a grant.",
			HelpDescription: authorizeHelp,
		},
		{
			Pattern:      "callback$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: operationPrefix, OperationVerb: "complete", OperationSuffix: "authorization"},
			Fields: map[string]*framework.FieldSchema{
				"state":             {Type: framework.TypeString, Description: "The state authorize returned."},
				"code":              {Type: framework.TypeString, Description: "The authorization code."},
				"error":             {Type: framework.TypeString, Description: "The provider's error code, if it refused."},
				"error_description": {Type: framework.TypeString, Description: "The provider's error description."},
				"iss":               {Type: framework.TypeString, Description: "The issuer (RFC 9207), when the provider sends it."},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: forwarded(b.pathCallback),
			},
			HelpSynopsis:    "Where the browser returns after authorizing; completes the pending grant.",
			HelpDescription: authorizeHelp,
		},
	}
}

// flowGrant is the grant a flow completes and what the flow asks for.
type flowGrant struct {
	grant    *grantEntry
	provider *providerHandle
	scopes   []string
	creating bool
}

// prepareFlowGrant loads or creates (in memory) the grant a flow completes.
// The caller holds the grant's lock.
func (b *backend) prepareFlowGrant(ctx context.Context, req *logical.Request, d *framework.FieldData) (*flowGrant, *logical.Response, error) {
	name := d.Get("name").(string)
	g, err := getGrant(ctx, req.Storage, name)
	if err != nil {
		return nil, nil, err
	}
	creating := g == nil
	provider := d.Get("provider").(string)
	switch {
	case creating && provider == "":
		return nil, logical.ErrorResponse("provider is required to authorize a new grant"), nil
	case creating:
		g = &grantEntry{Name: name, ID: randomID(), Provider: provider, CreatedAt: time.Now().UTC(), OwnerEntityID: req.EntityID}
		for field, dst := range map[string]*time.Duration{"max_age": &g.MaxAge, "idle_timeout": &g.IdleTimeout, "keep_alive": &g.KeepAlive} {
			if v := d.Get(field).(int); v < 0 {
				return nil, logical.ErrorResponse("%s must not be negative", field), nil
			} else {
				*dst = time.Duration(v) * time.Second
			}
		}
		if id := strings.TrimSpace(d.Get("owner_entity_id").(string)); id != "" {
			entity, err := b.System().EntityInfo(id)
			if err != nil {
				return nil, nil, err
			}
			if entity == nil {
				return nil, logical.ErrorResponse("owner_entity_id: entity %q does not exist", id), nil
			}
			g.OwnerEntityID = id
		}
	case provider != "" && provider != g.Provider:
		return nil, logical.ErrorResponse("provider: grant %q belongs to provider %q", name, g.Provider), nil
	case g.Status == statusRevoking:
		return nil, logical.ErrorResponse("grant %q is being revoked", name), nil
	}
	h, err := b.provider(ctx, req.Storage, g.Provider)
	if err != nil {
		return nil, logical.ErrorResponse("provider: %s", err), nil
	}
	fg := &flowGrant{grant: g, provider: h, creating: creating, scopes: g.Scopes}
	if v, ok := d.GetOk("scopes"); ok {
		fg.scopes = normalizeScopes(v.([]string))
	} else if len(fg.scopes) == 0 {
		fg.scopes = h.entry.Scopes
	}
	if creating {
		g.Scopes = fg.scopes
	}
	return fg, nil, nil
}

func randomState() string {
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(buf)
}

// flowHandler runs a flow's start with its grant locked and prepared.
func (b *backend) flowHandler(start func(context.Context, *logical.Request, *configEntry, *flowGrant) (*logical.Response, error)) framework.OperationFunc {
	return func(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
		cfg, err := b.mountConfig(ctx, req.Storage)
		if err != nil {
			return nil, err
		}
		ctx = detached(ctx)
		unlock := b.grantLocks.Lock(d.Get("name").(string))
		defer unlock()
		fg, resp, err := b.prepareFlowGrant(ctx, req, d)
		if resp != nil || err != nil {
			return resp, err
		}
		return start(ctx, req, cfg, fg)
	}
}

// storePending seals a flow's secret (code verifier or device code) into
// its pending record and stores it.
func (b *backend) storePending(ctx context.Context, s logical.Storage, key, secret string, p *pendingAuth) error {
	kr, err := b.sealingKeys(ctx, s)
	if err != nil {
		return err
	}
	if p.Secret, err = kr.seal(secret, pendingAAD(key)); err != nil {
		return err
	}
	return putJSON(ctx, s, pendingPrefix+key, p)
}

func (b *backend) startAuthorization(ctx context.Context, req *logical.Request, cfg *configEntry, fg *flowGrant) (*logical.Response, error) {
	g, h := fg.grant, fg.provider
	if cfg.RedirectURI == "" {
		return logical.ErrorResponse("config redirect_uri is not set: write this mount's callback URL to config first"), nil
	}
	if h.client.Endpoints().Authorization == "" {
		return logical.ErrorResponse("provider %q has no authorization_url", g.Provider), nil
	}
	if err := b.startPending(ctx, req.Storage, cfg, g, fg.creating); err != nil {
		return nil, err
	}
	state, verifier := randomState(), oauthclient.NewCodeVerifier()
	expires := time.Now().Add(authorizationLifetime).UTC()
	if err := b.storePending(ctx, req.Storage, pendingKeyForState(state), verifier, &pendingAuth{
		Kind: pendingCode, Grant: g.Name, GrantID: g.ID, Provider: g.Provider,
		RedirectURI: cfg.RedirectURI, Scopes: fg.scopes, ExpiresAt: expires,
	}); err != nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]any{
		"authorization_url": h.client.AuthCodeURL(cfg.RedirectURI, state, verifier, fg.scopes, nil),
		"state":             state,
		"expires_at":        formatTime(expires),
	}}, nil
}

func (b *backend) startDeviceFlow(ctx context.Context, req *logical.Request, cfg *configEntry, fg *flowGrant) (*logical.Response, error) {
	g, h := fg.grant, fg.provider
	if h.client.Endpoints().DeviceAuthorization == "" {
		return logical.ErrorResponse("provider %q has no device_authorization_url", g.Provider), nil
	}
	da, err := h.client.StartDevice(ctx, fg.scopes)
	if err != nil {
		return nil, upstreamError(g.Provider, err, fg.scopes)
	}
	if !da.Expiry.After(time.Now()) {
		da.Expiry = time.Now().Add(authorizationLifetime) // expires_in missing
	}
	if err := b.startPending(ctx, req.Storage, cfg, g, fg.creating); err != nil {
		return nil, err
	}
	interval := int64(da.Interval / time.Second)
	if err := b.storePending(ctx, req.Storage, pendingKeyForDevice(g.Name), da.DeviceCode, &pendingAuth{
		Kind: pendingDevice, Grant: g.Name, GrantID: g.ID, Provider: g.Provider,
		Scopes: fg.scopes, ExpiresAt: da.Expiry.UTC(), Interval: interval,
		NextPoll: time.Now().Add(da.Interval),
	}); err != nil {
		return nil, err
	}
	b.background.wake()
	return &logical.Response{Data: map[string]any{
		"user_code":                 da.UserCode,
		"verification_uri":          da.VerificationURI,
		"verification_uri_complete": da.VerificationURIComplete,
		"expires_at":                formatTime(da.Expiry),
		"interval":                  interval,
	}}, nil
}

// pathCallback completes an authorization-code flow. It is unauthenticated
// (the browser calls it): the state, unguessable and single-use, is what
// authorizes it.
func (b *backend) pathCallback(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	state := d.Get("state").(string)
	if state == "" {
		return logical.ErrorResponse("state is required"), nil
	}
	ctx = detached(ctx)
	key := pendingKeyForState(state)
	p, err := b.loadPending(ctx, req.Storage, key)
	if err != nil {
		return nil, err
	}
	if p == nil || p.Kind != pendingCode {
		return logical.ErrorResponse("state: no pending authorization has this state (unknown, used or expired)"), nil
	}
	// Single use, whatever happens next.
	if err := req.Storage.Delete(ctx, pendingPrefix+key); err != nil {
		return nil, err
	}
	if time.Now().After(p.ExpiresAt) {
		b.failPendingByName(ctx, req.Storage, p, "the authorization was not completed in time; start it again")
		return logical.ErrorResponse("state: the authorization expired; start it again"), nil
	}
	h, err := b.provider(ctx, req.Storage, p.Provider)
	if err != nil {
		return nil, upstreamError(p.Provider, err, nil)
	}
	// RFC 9207: a provider that names itself must be the one we sent the
	// user to (mix-up defense).
	if iss := d.Get("iss").(string); iss != "" && h.entry.Issuer != "" && strings.TrimSuffix(iss, "/") != h.entry.Issuer {
		b.failPendingByName(ctx, req.Storage, p, "the authorization response came from another issuer")
		return logical.ErrorResponse("iss: the response names issuer %q, not provider %q's", scrubParam(iss), p.Provider), nil
	}
	if upstreamErr := d.Get("error").(string); upstreamErr != "" {
		why := fmt.Sprintf("the provider refused the authorization (%s)", scrubParam(upstreamErr))
		b.failPendingByName(ctx, req.Storage, p, why)
		return nil, logical.CodedError(http.StatusBadRequest, why)
	}
	code := d.Get("code").(string)
	if code == "" {
		return logical.ErrorResponse("code is required"), nil
	}
	kr, err := b.sealingKeys(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	verifier, err := kr.open(p.Secret, pendingAAD(key))
	if err != nil {
		return nil, err
	}
	tok, err := h.client.ExchangeCode(ctx, code, p.RedirectURI, verifier)
	if err != nil {
		mapped := upstreamError(p.Provider, err, nil)
		if oauthclient.HasCode(err, oauthclient.ErrCodeInvalidGrant) {
			// A bad or used code is the user's flow failing, not upstream trouble.
			mapped = logical.CodedError(http.StatusBadRequest, fmt.Sprintf(
				"code: provider %q rejected the authorization code (invalid_grant); start the authorization again", p.Provider))
		}
		b.failPendingByName(ctx, req.Storage, p, mapped.Error())
		return nil, mapped
	}
	g, err := b.completeGrant(ctx, req.Storage, p, tok)
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]any{"grant": g.Name, "status": g.Status, "scopes": nonNil(g.Scopes)}}, nil
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

const authorizeHelp = `
grants/NAME/authorize starts an authorization-code flow with PKCE S256 and
returns authorization_url, state and expires_at: open the URL in a browser;
the provider sends it back to callback (config redirect_uri), which
exchanges the code and stores the grant's refresh token.

grants/NAME/device starts a device flow (RFC 8628) and returns user_code,
verification_uri(_complete), expires_at and interval: the user approves on
any device, and the engine polls the provider in the background until the
grant is active.

A new grant is "pending" until the flow completes and "invalid" if it fails
or expires; an existing grant keeps working and is re-authorized in place.
`
