package backend

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/backend/oauthclient"
)

// Role grant types.
const (
	grantTypeRefreshToken      = "refresh_token"
	grantTypeClientCredentials = "client_credentials"
	grantTypeTokenExchange     = "token_exchange"
)

const defaultMinRemaining = 30 * time.Second

// roleEntry says what creds/NAME issues.
type roleEntry struct {
	Name          string        `json:"name"`
	GrantType     string        `json:"grant_type"`
	Grant         string        `json:"grant,omitempty"`
	Provider      string        `json:"provider,omitempty"`
	Scopes        []string      `json:"scopes,omitempty"`
	Audience      []string      `json:"audience,omitempty"`
	Resource      []string      `json:"resource,omitempty"`
	StrictScopes  bool          `json:"strict_scopes"`
	TTL           time.Duration `json:"ttl,omitempty"`
	MaxTTL        time.Duration `json:"max_ttl,omitempty"`
	TokenReuse    bool          `json:"token_reuse"`
	MinRemaining  time.Duration `json:"min_remaining"`
	VerifyOnRenew bool          `json:"verify_on_renew"`
}

func (r *roleEntry) tokenOptions() oauthclient.TokenOptions {
	return oauthclient.TokenOptions{Scopes: r.Scopes, Audience: r.Audience, Resource: r.Resource}
}

// fingerprint identifies the settings a shared token was issued under, so
// a changed role never hands out a token made for its old settings.
func (r *roleEntry) fingerprint() string {
	return strings.Join([]string{r.GrantType, r.Grant, r.Provider,
		strings.Join(r.Scopes, " "), strings.Join(r.Audience, " "), strings.Join(r.Resource, " ")}, "|")
}

// role is getRole through the cache; the creds and renew paths use it.
func (b *backend) role(ctx context.Context, s logical.Storage, name string) (*roleEntry, error) {
	b.cacheMu.RLock()
	r, ok := b.roles[name]
	b.cacheMu.RUnlock()
	if ok {
		return r, nil
	}
	r, err := getRole(ctx, s, name)
	if err != nil || r == nil {
		return r, err
	}
	b.cacheMu.Lock()
	b.roles[name] = r
	b.cacheMu.Unlock()
	return r, nil
}

// checkGrantScopes refuses a grant whose scopes no longer cover the role's:
// the subset rule of role write holds at every issue too, since either
// side may have changed since.
func (r *roleEntry) checkGrantScopes(g *grantEntry) error {
	if len(g.Scopes) == 0 || len(r.Scopes) == 0 {
		return nil
	}
	if extra := missingFrom(r.Scopes, g.Scopes); len(extra) > 0 {
		return logical.CodedError(http.StatusBadRequest, fmt.Sprintf(
			"role %q asks for scopes [%s] that grant %q no longer carries [%s]; fix the role or re-authorize the grant",
			r.Name, strings.Join(extra, " "), g.Name, strings.Join(g.Scopes, " ")))
	}
	return nil
}

// normalizeScopes trims, drops empties and duplicates, and sorts, so that
// scope sets compare as sets.
func normalizeScopes(in []string) []string {
	seen := make(map[string]bool, len(in))
	var out []string
	for _, s := range in {
		for _, f := range strings.Fields(s) {
			if !seen[f] {
				seen[f] = true
				out = append(out, f)
			}
		}
	}
	sort.Strings(out)
	return out
}

// missingFrom returns the members of want that are not in have.
func missingFrom(want, have []string) []string {
	set := make(map[string]bool, len(have))
	for _, h := range have {
		set[h] = true
	}
	var out []string
	for _, w := range want {
		if !set[w] {
			out = append(out, w)
		}
	}
	return out
}

// checkResourceIndicator applies RFC 8707 §2: an absolute URI without a
// fragment.
func checkResourceIndicator(res string) error {
	u, err := parseAbsoluteURI(res)
	if err != nil {
		return fmt.Errorf("%q: %w", res, err)
	}
	if u.Fragment != "" {
		return fmt.Errorf("%q must not contain a fragment", res)
	}
	return nil
}

func parseAbsoluteURI(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	if !u.IsAbs() {
		return nil, errors.New("must be an absolute URI")
	}
	return u, nil
}

// checkAllowedTargets refuses a token_exchange role that asks for an
// audience or resource its provider does not allow: an exchange mints a
// token for another service, which the provider's operator decides.
func (r *roleEntry) checkAllowedTargets(p *providerEntry) error {
	for field, asked := range map[string][]string{"audience": r.Audience, "resource": r.Resource} {
		if extra := missingFrom(asked, p.AllowedAudiences); len(extra) > 0 {
			return logical.CodedError(http.StatusBadRequest, fmt.Sprintf(
				"%s: [%s] not in provider %q's allowed_audiences [%s]", field, strings.Join(extra, " "), p.Name, strings.Join(p.AllowedAudiences, " ")))
		}
	}
	return nil
}

// rolesOfGrant names the roles that issue from grant.
func (b *backend) rolesOfGrant(ctx context.Context, s logical.Storage, grant string) ([]string, error) {
	names, err := listRoles(ctx, s)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, name := range names {
		r, err := b.role(ctx, s, name)
		if err != nil {
			return nil, err
		}
		if r != nil && r.Grant == grant {
			out = append(out, name)
		}
	}
	return out, nil
}
