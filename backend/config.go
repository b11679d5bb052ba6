package backend

import (
	"context"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

const (
	defaultRefreshSkew     = 10 * time.Second
	defaultTidyInterval    = time.Minute
	defaultUpstreamTimeout = 30 * time.Second
	defaultMaxPending      = 1000
)

type configEntry struct {
	RedirectURI              string        `json:"redirect_uri"`
	RefreshSkew              time.Duration `json:"refresh_skew"`
	TidyInterval             time.Duration `json:"tidy_interval"`
	UpstreamTimeout          time.Duration `json:"upstream_timeout"`
	MaxPendingAuthorizations int           `json:"max_pending_authorizations"`
}

func defaultConfig() *configEntry {
	return &configEntry{
		RefreshSkew:              defaultRefreshSkew,
		TidyInterval:             defaultTidyInterval,
		UpstreamTimeout:          defaultUpstreamTimeout,
		MaxPendingAuthorizations: defaultMaxPending,
	}
}

// mountConfig returns the mount's settings, cached.
func (b *backend) mountConfig(ctx context.Context, s logical.Storage) (*configEntry, error) {
	b.cacheMu.RLock()
	cfg := b.config
	b.cacheMu.RUnlock()
	if cfg != nil {
		return cfg, nil
	}
	cfg, err := getConfig(ctx, s)
	if err != nil {
		return nil, err
	}
	b.cacheMu.Lock()
	b.config = cfg
	b.cacheMu.Unlock()
	return cfg, nil
}
