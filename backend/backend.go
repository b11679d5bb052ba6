// Package backend is the Vault secrets engine: it keeps upstream OAuth 2.0
// refresh tokens sealed in Vault and issues short-lived access tokens as
// leases.
package backend

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
)

// Version is the plugin's version, set at build time with
// -ldflags "-X .../backend.Version=v1.2.3".
var Version = "v0.0.0-dev"

const (
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
//
// Lock order (never take an earlier one while holding a later one):
//
//	recordLocks (one record: a grant, provider, pending flow; the
//	             grant's lock is held across its refresh's upstream call)
//	sharedState.mu (one token_reuse role; held across a new token's issue)
//	keysMu      (read: one seal-and-store; write: keys/rotate switching or
//	             retiring keys, never across an upstream call)
//	indexLocks  (one grant-index shard)
//	cacheMu     (the in-memory caches; never held across I/O but the
//	             one-time keyring load)
//
// No lock that unrelated requests need is held across an upstream call.
type backend struct {
	*framework.Backend
	logger hclog.Logger
	// now is the clock; tests replace it.
	now func() time.Time

	// recordLocks serialise the writers of one stored record, keyed by
	// its storage key. A grant's lock makes its refreshes one at a time:
	// a rotating refresh token must never be redeemed twice.
	recordLocks keyedMutex
	indexLocks  keyedMutex

	// keysMu is read-held by every seal-and-store (storeSealed) and
	// write-held by keys/rotate only to switch or retire keys; rotating
	// keeps rotations one at a time.
	keysMu   sync.RWMutex
	rotating sync.Mutex

	// Caches of what the creds path reads. Every write through this
	// backend updates them; dropCaches forgets what other nodes change.
	cacheMu   sync.RWMutex
	config    *configEntry
	keyring   *keyring
	providers map[string]*providerHandle
	roles     map[string]*roleEntry
	grants    map[string]*grantEntry // only grants of token_reuse roles
	shared    map[string]*sharedState
	// unsaved holds grants whose write failed after a refresh: their
	// refresh token may have rotated, so they win over storage until the
	// worker has stored them.
	unsaved map[string]*grantEntry

	inflight   inflight
	background *backgroundWorker
	metrics    *engineMetrics
	events     eventLog
}

func newBackend(conf *logical.BackendConfig) *backend {
	b := &backend{
		logger:    conf.Logger,
		now:       time.Now,
		unsaved:   make(map[string]*grantEntry),
		providers: make(map[string]*providerHandle),
		roles:     make(map[string]*roleEntry),
		grants:    make(map[string]*grantEntry),
		shared:    make(map[string]*sharedState),
		metrics:   newEngineMetrics(),
	}
	b.background = newBackgroundWorker(b)
	b.Backend = &framework.Backend{
		Help:        strings.TrimSpace(backendHelp),
		BackendType: logical.TypeLogical,
		PathsSpecial: &logical.Paths{
			Unauthenticated: []string{"callback"},
			SealWrapStorage: b.sealWrapPaths(),
		},
		Paths: guardInputs(framework.PathAppend(
			[]*framework.Path{pathConfig(b)},
			pathProviders(b),
			pathGrants(b),
			pathGrantFlows(b),
			pathRoles(b),
			[]*framework.Path{pathCreds(b), pathKeysRotate(b), pathMetrics(b)},
			pathTidy(b),
		)),
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

// drainTimeout bounds how long Cleanup waits for refreshes in flight.
const drainTimeout = 10 * time.Second

// clean runs on step-down, seal, unmount and plugin reload: it lets the
// refreshes under way store what they got, and tries once more to store
// unsaved grants, before the process may go.
func (b *backend) clean(ctx context.Context) {
	if !b.inflight.drain(drainTimeout) {
		b.logger.Error("refreshes still in flight after the drain timeout; their rotated tokens may be lost", "timeout", drainTimeout)
	}
	b.background.stop()
	if n := len(b.unsavedGrantNames()); n > 0 {
		b.logger.Error("grants could not be stored before shutdown; their refresh tokens may have rotated upstream", "grants", b.unsavedGrantNames())
	}
}

// invalidate drops cached entries when another node (or a replicated write)
// changes them.
func (b *backend) invalidate(_ context.Context, key string) {
	b.dropCaches(key)
}

// dropCaches forgets every cached copy of the record at storage key: the
// one place a local write or another node's write invalidates caches.
func (b *backend) dropCaches(key string) {
	b.cacheMu.Lock()
	defer b.cacheMu.Unlock()
	switch {
	case key == configPath:
		b.config = nil
		// Provider clients carry the mount's timeout.
		b.providers = make(map[string]*providerHandle)
	case key == keyringPath:
		b.keyring = nil
	case strings.HasPrefix(key, providerPrefix):
		delete(b.providers, strings.TrimPrefix(key, providerPrefix))
	case strings.HasPrefix(key, rolePrefix):
		delete(b.roles, strings.TrimPrefix(key, rolePrefix))
	case strings.HasPrefix(key, grantPrefix):
		delete(b.grants, strings.TrimPrefix(key, grantPrefix))
	case strings.HasPrefix(key, sharedTokenPrefix):
		delete(b.shared, strings.TrimPrefix(key, sharedTokenPrefix))
	}
}

// forwarded is an operation that performance standbys and secondaries hand
// to the node that may write: everything that calls upstream and stores.
func forwarded(cb framework.OperationFunc) *framework.PathOperation {
	return &framework.PathOperation{Callback: cb, ForwardPerformanceStandby: true, ForwardPerformanceSecondary: true}
}

// answered makes a successful write or delete answer with a response,
// empty if need be: Vault adds its "ignored these unrecognized parameters"
// warning only to a non-nil response, and without it a misspelled option
// (forse=true) passes silently.
func answered(resp *logical.Response, err error) (*logical.Response, error) {
	if resp == nil && err == nil {
		resp = &logical.Response{}
	}
	return resp, err
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
