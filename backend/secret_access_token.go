package backend

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/backend/oauthclient"
)

func secretAccessToken(b *backend) *framework.Secret {
	return &framework.Secret{
		Type: secretTypeAccess,
		Fields: map[string]*framework.FieldSchema{
			"access_token": {Type: framework.TypeString, Description: "Upstream OAuth 2.0 access token."},
			"token_type":   {Type: framework.TypeString, Description: "Token type, usually Bearer."},
			"expires_at":   {Type: framework.TypeString, Description: "When the upstream token expires (RFC 3339)."},
			"scopes":       {Type: framework.TypeCommaStringSlice, Description: "Scopes the token carries."},
			"grant":        {Type: framework.TypeString, Description: "Grant the token came from, if any."},
			"revocation":   {Type: framework.TypeString, Description: "on_lease_end or expiry_only."},
		},
		Renew:  b.secretAccessTokenRenew,
		Revoke: b.secretAccessTokenRevoke,
	}
}

// leaseData is a lease's InternalData. It is kept to plain strings: it
// round-trips through JSON in Vault's lease storage.
type leaseData struct {
	Role, GrantType, Provider, AccessToken, Revocation, TokenID, Grant, GrantID string
	// Fingerprint is the role's settings at issue (empty on leases issued
	// before it was recorded).
	Fingerprint string
	ExpiresAt   time.Time
	Shared      bool
}

func parseLeaseData(in map[string]any) (*leaseData, error) {
	str := func(k string) string {
		v, _ := in[k].(string)
		return v
	}
	ld := &leaseData{
		Role:        str("role"),
		GrantType:   str("grant_type"),
		Provider:    str("provider"),
		AccessToken: str("access_token"),
		Revocation:  str("revocation"),
		TokenID:     str("token_id"),
		Grant:       str("grant"),
		GrantID:     str("grant_id"),
		Fingerprint: str("fingerprint"),
		Shared:      str("shared") == "true",
	}
	if ld.Role == "" || ld.AccessToken == "" {
		return nil, errors.New("lease is missing its internal data")
	}
	if e := str("expires_at"); e != "" {
		t, err := time.Parse(time.RFC3339Nano, e)
		if err != nil {
			return nil, fmt.Errorf("lease has a malformed expires_at: %w", err)
		}
		ld.ExpiresAt = t
	}
	return ld, nil
}

// secretAccessTokenRenew re-verifies everything before extending: zero
// trust, the grant and its owner may have changed since the lease began.
func (b *backend) secretAccessTokenRenew(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	ld, err := parseLeaseData(req.Secret.InternalData)
	if err != nil {
		return nil, err
	}
	deny := func(format string, args ...any) (*logical.Response, error) {
		return nil, logical.CodedError(http.StatusBadRequest, "renewal denied: "+fmt.Sprintf(format, args...))
	}
	role, err := b.role(ctx, req.Storage, ld.Role)
	if err != nil {
		return nil, err
	}
	if role == nil {
		return deny("role %q no longer exists", ld.Role)
	}
	if role.GrantType != ld.GrantType || role.Grant != ld.Grant || (ld.Grant == "" && role.Provider != ld.Provider) {
		return deny("role %q no longer issues from the same grant or provider", ld.Role)
	}
	if ld.Fingerprint != "" && ld.Fingerprint != role.fingerprint() {
		return deny("role %q's scopes, audience or resource changed since the lease was issued; read creds/%s for a new one", ld.Role, ld.Role)
	}
	if ld.Grant != "" {
		g, err := getGrant(ctx, req.Storage, ld.Grant)
		if err != nil {
			return nil, err
		}
		if g == nil || g.ID != ld.GrantID {
			return deny("grant %q no longer exists", ld.Grant)
		}
		if err := b.unusableError(g, b.now()); err != nil {
			return deny("%s", err)
		}
	}
	if role.VerifyOnRenew {
		h, err := b.provider(ctx, req.Storage, ld.Provider)
		if err != nil {
			return nil, upstreamError(ld.Provider, err, nil)
		}
		info, err := h.client.Introspect(ctx, ld.AccessToken, oauthclient.HintAccessToken)
		if err != nil {
			return nil, upstreamError(ld.Provider, err, nil)
		}
		if !info.Active {
			return deny("provider %q reports the token is no longer active", ld.Provider)
		}
	}
	now := b.now()
	cfg, err := b.mountConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	ttl := role.TTL
	if !ld.ExpiresAt.IsZero() {
		// A renewal ends where the lease could have ended at issue (the
		// token's expiry less refresh_skew, by leaseTTL's rule) and never
		// later: one that would leave under a second is denied, so that a
		// consumer (Vault Agent) reads a new token instead of holding one
		// about to die.
		end := leaseEnd(ld.ExpiresAt, cfg.RefreshSkew, req.Secret.IssueTime)
		left := end.Sub(now)
		if left < time.Second {
			return deny("the upstream token expires at %s, within refresh_skew; read creds/%s for a new one",
				ld.ExpiresAt.UTC().Format(time.RFC3339), ld.Role)
		}
		if ttl <= 0 || ttl > left {
			ttl = left
		}
	}
	if role.MaxTTL > 0 {
		left := req.Secret.IssueTime.Add(role.MaxTTL).Sub(now)
		if left <= 0 {
			return deny("the lease has reached max_ttl")
		}
		if ttl <= 0 || ttl > left {
			ttl = left
		}
	}
	resp := &logical.Response{Secret: req.Secret}
	resp.Secret.TTL = ttl
	resp.Secret.MaxTTL = role.MaxTTL
	return resp, nil
}

// secretAccessTokenRevoke ends a lease. It is idempotent; a transient
// upstream failure returns an error so Vault retries, and
// logical.ErrUnrecoverable is returned only when no retry can succeed.
func (b *backend) secretAccessTokenRevoke(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	ld, err := parseLeaseData(req.Secret.InternalData)
	if err != nil {
		b.logger.Error("cannot revoke lease", "error", err)
		return nil, logical.ErrUnrecoverable
	}
	if ld.Shared {
		err = b.releaseShared(ctx, req.Storage, ld)
	} else {
		if ld.Revocation == revocationOnLeaseEnd {
			err = b.revokeAccessToken(ctx, req.Storage, ld)
		}
		if err == nil && ld.Grant != "" {
			err = b.releaseGrantLease(ctx, req.Storage, ld)
		}
	}
	b.metrics.leaseRevocations.inc(ld.Provider, leaseEndOutcome(ld, err))
	if errors.Is(err, logical.ErrUnrecoverable) {
		return nil, logical.ErrUnrecoverable // unwrapped: gRPC matches it by identity
	}
	return nil, err
}
