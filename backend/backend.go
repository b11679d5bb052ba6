// Package backend is the Vault secrets engine: it keeps upstream OAuth 2.0
// refresh tokens sealed in Vault and issues short-lived access tokens as
// leases.
package backend

import (
	"context"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
)

// Version is the plugin's version, set at build time with
// -ldflags "-X .../backend.Version=v1.2.3".
var Version = "v0.0.0-dev"

// Storage prefixes. Everything that holds a sealed secret lives under a
// seal-wrapped prefix.
const (
	configPath       = "config"
	providerPrefix   = "providers/"
	grantPrefix      = "grants/"
	rolePrefix       = "roles/"
	keyringPath      = "keys/seal"
	revokingPrefix   = "revoking/"
	outstandingPfx   = "tokens/"
	sharedTokenPfx   = "reuse/"
	operationPrefix  = "oauth"
	secretTypeAccess = "access_token"
)

// Factory returns a configured backend; Vault calls it once per mount.
func Factory(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
	b := newBackend(conf)
	if err := b.Setup(ctx, conf); err != nil {
		return nil, err
	}
	return b, nil
}

// backend holds only per-mount state: one plugin process serves many mounts.
type backend struct {
	*framework.Backend
	logger hclog.Logger

	// grantLocks serialises refreshes of one grant: a rotating refresh
	// token must never be redeemed twice.
	grantLocks keyedMutex
	indexLocks keyedMutex

	// Caches of what the creds path reads. Every write through this
	// backend updates them; Invalidate drops what other nodes change.
	cacheMu   sync.RWMutex
	config    *configEntry
	keyring   *keyring
	providers map[string]*providerHandle
	roles     map[string]*roleEntry
	grants    map[string]*grantEntry // only grants of token_reuse roles
	shared    map[string]*sharedState

	// keysMu is held for writing while keys/rotate re-seals everything.
	keysMu sync.RWMutex

	background *backgroundWorker
}

func newBackend(conf *logical.BackendConfig) *backend {
	b := &backend{
		logger:    conf.Logger,
		providers: make(map[string]*providerHandle),
		roles:     make(map[string]*roleEntry),
		grants:    make(map[string]*grantEntry),
		shared:    make(map[string]*sharedState),
	}
	b.background = newBackgroundWorker(b)
	b.Backend = &framework.Backend{
		Help:        strings.TrimSpace(backendHelp),
		BackendType: logical.TypeLogical,
		PathsSpecial: &logical.Paths{
			Unauthenticated: []string{"callback"},
			SealWrapStorage: []string{
				pendingPrefix,
				providerPrefix,
				grantPrefix,
				"keys/",
				outstandingPfx,
				sharedTokenPfx,
			},
		},
		Paths: framework.PathAppend(
			[]*framework.Path{pathConfig(b)},
			pathProviders(b),
			pathGrants(b),
			pathGrantFlows(b),
			pathRoles(b),
			[]*framework.Path{pathCreds(b), pathKeysRotate(b)},
			pathTidy(b),
		),
		Secrets:        []*framework.Secret{secretAccessToken(b)},
		InitializeFunc: b.initialize,
		Clean:          b.clean,
		Invalidate:     b.invalidate,
		RunningVersion: Version,
	}
	return b
}

func (b *backend) initialize(_ context.Context, req *logical.InitializationRequest) error {
	b.background.start(req.Storage)
	return nil
}

func (b *backend) clean(context.Context) {
	b.background.stop()
}

// invalidate drops cached entries when another node (or a replicated write)
// changes them.
func (b *backend) invalidate(_ context.Context, key string) {
	switch {
	case key == configPath:
		b.cacheMu.Lock()
		b.config = nil
		b.cacheMu.Unlock()
	case key == keyringPath:
		b.cacheMu.Lock()
		b.keyring = nil
		b.cacheMu.Unlock()
	case strings.HasPrefix(key, providerPrefix):
		b.dropProvider(strings.TrimPrefix(key, providerPrefix))
	case strings.HasPrefix(key, rolePrefix):
		b.dropRole(strings.TrimPrefix(key, rolePrefix))
	case strings.HasPrefix(key, grantPrefix):
		b.dropGrant(strings.TrimPrefix(key, grantPrefix))
	case strings.HasPrefix(key, sharedTokenPfx):
		b.cacheMu.Lock()
		delete(b.shared, strings.TrimPrefix(key, sharedTokenPfx))
		b.cacheMu.Unlock()
	}
}

// forwarded is an operation that performance standbys and secondaries hand
// to the node that may write: everything that calls upstream and stores.
func forwarded(cb framework.OperationFunc) *framework.PathOperation {
	return &framework.PathOperation{Callback: cb, ForwardPerformanceStandby: true, ForwardPerformanceSecondary: true}
}

// writesAllowed reports whether this node may write shared storage, i.e.
// whether background work may run here.
func (b *backend) writesAllowed() bool {
	state := b.System().ReplicationState()
	if state.HasState(consts.ReplicationPerformanceStandby) || state.HasState(consts.ReplicationDRSecondary) {
		return false
	}
	return b.System().LocalMount() || !state.HasState(consts.ReplicationPerformanceSecondary)
}

// isReadOnlyErr matches logical.ErrReadOnly by message: over gRPC the error
// arrives as a new value and errors.Is does not match it.
func isReadOnlyErr(err error) bool {
	return err != nil && strings.Contains(err.Error(), logical.ErrReadOnly.Error())
}

const backendHelp = `
The OAuth secrets engine keeps upstream OAuth 2.0 refresh tokens sealed inside
Vault and issues short-lived upstream access tokens as Vault leases.

Configure a provider (providers/NAME), import or authorize a grant
(grants/NAME), define a role (roles/NAME) and read creds/NAME. When a lease
ends, the access token it carried is revoked upstream (RFC 7009) wherever
that is possible without killing the grant.
`
