package backend

import (
	"context"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/backend/oauthclient"
)

func pathConfig(b *backend) *framework.Path {
	return &framework.Path{
		Pattern: "config",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
		},
		Fields: map[string]*framework.FieldSchema{
			"redirect_uri": {
				Type:        framework.TypeString,
				Description: "Externally reachable URL of this mount's callback path, e.g. https://vault.example.com/v1/oauth/callback.",
			},
			"refresh_skew": {
				Type:        framework.TypeDurationSecond,
				Description: "How long before its expiry an access token counts as expired. Default 10s.",
				Default:     int(defaultRefreshSkew.Seconds()),
			},
			"tidy_interval": {
				Type:        framework.TypeDurationSecond,
				Description: "How often the background sweep runs. Default 1m.",
				Default:     int(defaultTidyInterval.Seconds()),
			},
			"upstream_timeout": {
				Type:        framework.TypeDurationSecond,
				Description: "Timeout of each upstream call, unless the provider sets its own. Default 30s.",
				Default:     int(defaultUpstreamTimeout.Seconds()),
			},
			"max_pending_authorizations": {
				Type:        framework.TypeInt,
				Description: "Most authorization and device flows that may be pending at once. Default 1000.",
				Default:     defaultMaxPending,
			},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback:     b.pathConfigRead,
				DisplayAttrs: &framework.DisplayAttributes{OperationSuffix: "configuration"},
			},
			logical.UpdateOperation: &framework.PathOperation{
				Callback:     b.pathConfigWrite,
				DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "configure"},
			},
		},
		HelpSynopsis:    "Mount-wide settings.",
		HelpDescription: configHelp,
	}
}

func (b *backend) pathConfigRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	cfg, err := b.mountConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]any{
		"redirect_uri":               cfg.RedirectURI,
		"refresh_skew":               int64(cfg.RefreshSkew.Seconds()),
		"tidy_interval":              int64(cfg.TidyInterval.Seconds()),
		"upstream_timeout":           int64(cfg.UpstreamTimeout.Seconds()),
		"max_pending_authorizations": cfg.MaxPendingAuthorizations,
	}}, nil
}

func (b *backend) pathConfigWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	current, err := b.mountConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	cfg := *current
	if v, ok := d.GetOk("redirect_uri"); ok {
		uri := strings.TrimSpace(v.(string))
		if uri != "" {
			if err := oauthclient.CheckEndpointURL(uri); err != nil {
				return logical.ErrorResponse("redirect_uri: %s", err), nil
			}
		}
		cfg.RedirectURI = uri
	}
	for _, f := range []struct {
		name string
		dst  *time.Duration
		min  time.Duration
	}{
		{"refresh_skew", &cfg.RefreshSkew, 0},
		{"tidy_interval", &cfg.TidyInterval, time.Second},
		{"upstream_timeout", &cfg.UpstreamTimeout, time.Second},
	} {
		if v, ok := d.GetOk(f.name); ok {
			dur := time.Duration(v.(int)) * time.Second
			if dur < f.min {
				return logical.ErrorResponse("%s must be at least %s", f.name, f.min), nil
			}
			*f.dst = dur
		}
	}
	if v, ok := d.GetOk("max_pending_authorizations"); ok {
		if v.(int) < 1 {
			return logical.ErrorResponse("max_pending_authorizations must be at least 1"), nil
		}
		cfg.MaxPendingAuthorizations = v.(int)
	}
	if err := putConfig(ctx, req.Storage, &cfg); err != nil {
		return nil, err
	}
	b.dropCaches(configPath)
	b.background.wake()
	return b.pathConfigRead(ctx, req, d)
}

const configHelp = `
Mount-wide settings: redirect_uri (this mount's callback URL as the browser
reaches it), refresh_skew, tidy_interval, upstream_timeout and
max_pending_authorizations.
`
