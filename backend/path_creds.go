package backend

import (
	"context"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

func pathCreds(b *backend) *framework.Path {
	return &framework.Path{
		Pattern: "creds/" + framework.GenericNameRegex("name"),
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
			OperationVerb:   "generate",
			OperationSuffix: "credentials",
		},
		Fields: map[string]*framework.FieldSchema{
			"name": {Type: framework.TypeLowerCaseString, Description: "Name of the role.", Required: true},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: forwarded(b.pathCredsRead),
		},
		HelpSynopsis:    "Issue a leased upstream access token.",
		HelpDescription: credsHelp,
	}
}

func (b *backend) pathCredsRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	role, err := b.role(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if role == nil {
		return logical.ErrorResponse("role %q does not exist", name), nil
	}
	cfg, err := b.mountConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	it, err := b.issueCreds(ctx, req.Storage, role, cfg)
	b.metrics.credsIssued.inc(role.Name, credsOutcome(it, err))
	if err != nil {
		return nil, err
	}
	return b.leaseResponse(role, it, cfg), nil
}

func (b *backend) leaseResponse(role *roleEntry, it *issuedToken, cfg *configEntry) *logical.Response {
	grantName := ""
	internal := map[string]any{
		"role":         role.Name,
		"grant_type":   role.GrantType,
		"provider":     it.provider,
		"access_token": it.token.AccessToken,
		"revocation":   it.revocation,
		"token_id":     it.tokenID,
		"expires_at":   "",
		"shared":       "",
		"grant":        "",
		"grant_id":     "",
		"fingerprint":  role.fingerprint(),
	}
	if it.grant != nil {
		grantName = it.grant.Name
		internal["grant"], internal["grant_id"] = it.grant.Name, it.grant.ID
	}
	if !it.token.Expiry.IsZero() {
		internal["expires_at"] = it.token.Expiry.UTC().Format(time.RFC3339Nano)
	}
	if it.shared {
		internal["shared"] = "true"
	}
	data := map[string]any{
		"access_token": it.token.AccessToken,
		"token_type":   it.token.TokenType,
		"expires_at":   formatTime(it.token.Expiry),
		"scopes":       nonNil(tokenScopes(role, it)),
		"grant":        grantName,
		"revocation":   it.revocation,
	}
	// The provider's response_fields (Salesforce's instance_url), under
	// their own names; provider writes refuse names that clash.
	for name, v := range it.token.Fields {
		if key := strings.ReplaceAll(name, ".", "_"); !reservedCredsFields[key] {
			data[key] = v
		}
	}
	resp := b.Secret(secretTypeAccess).Response(data, internal)
	resp.Secret.TTL = leaseTTL(role.TTL, it.token.Expiry, cfg.RefreshSkew, b.now())
	resp.Secret.MaxTTL = role.MaxTTL
	resp.Warnings = it.warnings
	return resp
}

// tokenScopes is what the token really carries: the response's scope, or
// the requested scopes when it has none.
func tokenScopes(role *roleEntry, it *issuedToken) []string {
	if it.token.ScopeReturned {
		return normalizeScopes(it.token.Scopes)
	}
	if len(role.Scopes) > 0 {
		return role.Scopes
	}
	if it.grant != nil {
		return it.grant.Scopes
	}
	return nil
}

const credsHelp = `
Reading creds/ROLE issues an upstream access token as a Vault lease. The
lease TTL never exceeds the token's remaining life. "revocation" says what
ending the lease does: on_lease_end, the token is revoked upstream (RFC
7009); expiry_only, it lives until it expires, because revoking it would
also kill the grant (a refresh_token role at a provider with
revocation_cascades) or the provider cannot revoke.
`

// reservedCredsFields are the creds response's own fields, which
// response_fields cannot replace.
var reservedCredsFields = map[string]bool{
	"access_token": true, "token_type": true, "expires_at": true, "scopes": true, "grant": true, "revocation": true,
}
