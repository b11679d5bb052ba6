package backend

import (
	"context"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
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
				logical.UpdateOperation: forwarded(b.flowHandler(b.pathAuthorize)),
			},
			HelpSynopsis:    "Start an authorization-code flow (PKCE S256) for a grant.",
			HelpDescription: authorizeHelp,
		},
		{
			Pattern:      "grants/" + framework.GenericNameRegex("name") + "/device$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: operationPrefix, OperationVerb: "authorize", OperationSuffix: "grant-device"},
			Fields:       flowFields(),
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: forwarded(b.flowHandler(b.pathDevice)),
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
				// response_mode=form_post: the browser posts the response,
				// so the code is request data (HMAC'd in audit logs), not
				// part of the request URI.
				logical.UpdateOperation: forwarded(b.pathCallback),
			},
			HelpSynopsis:    "Where the browser returns after authorizing; completes the pending grant.",
			HelpDescription: authorizeHelp,
		},
	}
}

// parseFlowRequest validates what authorize and device were asked for.
func parseFlowRequest(req *logical.Request, d *framework.FieldData) (*flowRequest, *logical.Response) {
	fr := &flowRequest{
		name:     d.Get("name").(string),
		provider: d.Get("provider").(string),
		owner:    req.EntityID,
	}
	if v, ok := d.GetOk("scopes"); ok {
		fr.scopes, fr.scopesSet = normalizeScopes(v.([]string)), true
	}
	for field, dst := range map[string]*time.Duration{"max_age": &fr.maxAge, "idle_timeout": &fr.idleTimeout, "keep_alive": &fr.keepAlive} {
		v := d.Get(field).(int)
		if v < 0 {
			return nil, logical.ErrorResponse("%s must not be negative", field)
		}
		*dst = time.Duration(v) * time.Second
	}
	return fr, nil
}

// flowHandler validates a flow's request and its owner and runs start.
func (b *backend) flowHandler(start func(context.Context, logical.Storage, *configEntry, *flowGrant) (*logical.Response, error)) framework.OperationFunc {
	return func(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
		fr, resp := parseFlowRequest(req, d)
		if resp != nil {
			return resp, nil
		}
		if id := strings.TrimSpace(d.Get("owner_entity_id").(string)); id != "" {
			if err := b.checkOwner(id); err != nil {
				return respondBadInput(err)
			}
			fr.owner = id
		}
		cfg, err := b.mountConfig(ctx, req.Storage)
		if err != nil {
			return nil, err
		}
		resp, err = b.startFlow(ctx, req.Storage, fr, func(fg *flowGrant) (*logical.Response, error) {
			return start(ctx, req.Storage, cfg, fg)
		})
		if err != nil {
			return respondBadInput(err)
		}
		return resp, nil
	}
}

func (b *backend) pathAuthorize(ctx context.Context, s logical.Storage, cfg *configEntry, fg *flowGrant) (*logical.Response, error) {
	if cfg.RedirectURI == "" {
		return logical.ErrorResponse("config redirect_uri is not set: write this mount's callback URL to config first"), nil
	}
	if fg.provider.client.Endpoints().Authorization == "" {
		return logical.ErrorResponse("provider %q has no authorization_url", fg.grant.Provider), nil
	}
	a, err := b.startAuthorization(ctx, s, cfg, fg)
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]any{
		"authorization_url": a.url,
		"state":             a.state,
		"expires_at":        formatTime(a.expiresAt),
	}}, nil
}

func (b *backend) pathDevice(ctx context.Context, s logical.Storage, cfg *configEntry, fg *flowGrant) (*logical.Response, error) {
	if fg.provider.client.Endpoints().DeviceAuthorization == "" {
		return logical.ErrorResponse("provider %q has no device_authorization_url", fg.grant.Provider), nil
	}
	da, err := b.startDeviceFlow(ctx, s, cfg, fg)
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]any{
		"user_code":                 da.UserCode,
		"verification_uri":          da.VerificationURI,
		"verification_uri_complete": da.VerificationURIComplete,
		"expires_at":                formatTime(da.Expiry),
		"interval":                  int64(da.Interval / time.Second),
	}}, nil
}

// pathCallback is unauthenticated (the browser calls it): the state is
// what authorizes it.
func (b *backend) pathCallback(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	state := d.Get("state").(string)
	if state == "" {
		return logical.ErrorResponse("state is required"), nil
	}
	g, warning, err := b.completeCallback(ctx, req.Storage, callbackParams{
		state:         state,
		code:          d.Get("code").(string),
		upstreamError: d.Get("error").(string),
		iss:           d.Get("iss").(string),
	})
	if err != nil {
		return nil, err
	}
	resp := &logical.Response{Data: map[string]any{"grant": g.Name, "status": g.Status, "scopes": nonNil(g.Scopes)}}
	if warning != "" {
		resp.Warnings = []string{warning}
	}
	return resp, nil
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
