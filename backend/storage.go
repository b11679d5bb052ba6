package backend

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// The on-disk layout, on one screen. Every key the engine writes is built
// here; docs/storage.md describes each record. Prefixes marked sealed hold
// values sealed with the mount's keys (seal.go) and are seal-wrapped.
const (
	configPath        = "config"        // configEntry
	keyringPath       = "keys/seal"     // keyring (seal-wrapped)
	providerPrefix    = "providers/"    // providers/<name>: providerEntry (sealed)
	grantPrefix       = "grants/"       // grants/<name>: grantEntry (sealed)
	rolePrefix        = "roles/"        // roles/<name>: roleEntry
	revokingPrefix    = "revoking/"     // revoking/<grant>: revocationMarker
	outstandingPrefix = "tokens/"       // tokens/<grant_id>/<token_id>: outstandingToken (sealed)
	sharedTokenPrefix = "reuse/"        // reuse/<role>: sharedTokens (sealed)
	pendingPrefix     = "pending/"      // pending/code-<sha256(state)>, pending/device-<grant>: pendingAuth (sealed)
	duePrefix         = "due/"          // due/<minute>/<grant>: empty; the due index
	grantIndexPrefix  = "index/grants/" // index/grants/<shard>: grantIndexShard
	replacedPrefix    = "replaced/"     // replaced/<grant_id>/<id>: replacedToken (sealed)
	keysPrefix        = "keys/"         // seal-wrapped as a whole
)

func grantPath(name string) string                   { return grantPrefix + name }
func providerPath(name string) string                { return providerPrefix + name }
func rolePath(name string) string                    { return rolePrefix + name }
func revokingPath(grant string) string               { return revokingPrefix + grant }
func outstandingDir(grantID string) string           { return outstandingPrefix + grantID + "/" }
func outstandingPath(grantID, tokenID string) string { return outstandingDir(grantID) + tokenID }
func replacedPath(grantID, id string) string         { return replacedPrefix + grantID + "/" + id }
func sharedPath(role string) string                  { return sharedTokenPrefix + role }
func pendingPath(key string) string                  { return pendingPrefix + key }
func dueMinute(t time.Time) string                   { return fmt.Sprintf("%012d", t.Unix()/60) }
func duePath(t time.Time, name string) string        { return duePrefix + dueMinute(t) + "/" + name }

func grantIndexPath(name string) string {
	sum := sha256.Sum256([]byte(name))
	return grantIndexPrefix + hex.EncodeToString(sum[:1])
}

func putJSON(ctx context.Context, s logical.Storage, key string, v any) error {
	entry, err := logical.StorageEntryJSON(key, v)
	if err != nil {
		return err
	}
	return s.Put(ctx, entry)
}

// getJSON reads key into v and reports whether it existed.
func getJSON(ctx context.Context, s logical.Storage, key string, v any) (bool, error) {
	entry, err := s.Get(ctx, key)
	if err != nil || entry == nil {
		return false, err
	}
	return true, entry.DecodeJSON(v)
}

// Typed access per record. Writers of sealed records go through
// storeSealed (seal.go) instead of the put functions here.

func getConfig(ctx context.Context, s logical.Storage) (*configEntry, error) {
	cfg := defaultConfig()
	if _, err := getJSON(ctx, s, configPath, cfg); err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return cfg, nil
}

func getKeyring(ctx context.Context, s logical.Storage) (*keyring, error) {
	kr := &keyring{}
	ok, err := getJSON(ctx, s, keyringPath, kr)
	if err != nil {
		return nil, fmt.Errorf("reading sealing keys: %w", err)
	}
	if !ok {
		return nil, nil
	}
	return kr, nil
}

func getGrant(ctx context.Context, s logical.Storage, name string) (*grantEntry, error) {
	g := &grantEntry{}
	ok, err := getJSON(ctx, s, grantPath(name), g)
	if err != nil {
		return nil, fmt.Errorf("reading grant %q: %w", name, err)
	}
	if !ok {
		return nil, nil
	}
	return g, nil
}

func listGrants(ctx context.Context, s logical.Storage) ([]string, error) {
	return s.List(ctx, grantPrefix)
}

func getProvider(ctx context.Context, s logical.Storage, name string) (*providerEntry, error) {
	p := &providerEntry{}
	ok, err := getJSON(ctx, s, providerPath(name), p)
	if err != nil {
		return nil, fmt.Errorf("reading provider %q: %w", name, err)
	}
	if !ok {
		return nil, nil
	}
	return p, nil
}

func listProviders(ctx context.Context, s logical.Storage) ([]string, error) {
	return s.List(ctx, providerPrefix)
}

func getRole(ctx context.Context, s logical.Storage, name string) (*roleEntry, error) {
	r := &roleEntry{}
	ok, err := getJSON(ctx, s, rolePath(name), r)
	if err != nil {
		return nil, fmt.Errorf("reading role %q: %w", name, err)
	}
	if !ok {
		return nil, nil
	}
	return r, nil
}

func listRoles(ctx context.Context, s logical.Storage) ([]string, error) {
	return s.List(ctx, rolePrefix)
}

func getRevocationMarker(ctx context.Context, s logical.Storage, grant string) (*revocationMarker, error) {
	m := &revocationMarker{}
	ok, err := getJSON(ctx, s, revokingPath(grant), m)
	if err != nil || !ok {
		return nil, err
	}
	return m, nil
}

func getOutstanding(ctx context.Context, s logical.Storage, path string) (*outstandingToken, error) {
	ot := &outstandingToken{}
	ok, err := getJSON(ctx, s, path, ot)
	if err != nil || !ok {
		return nil, err
	}
	return ot, nil
}

func getSharedTokens(ctx context.Context, s logical.Storage, role string) (*sharedTokens, error) {
	st := &sharedTokens{}
	if _, err := getJSON(ctx, s, sharedPath(role), st); err != nil {
		return nil, fmt.Errorf("reading shared tokens of role %q: %w", role, err)
	}
	if st.Tokens == nil {
		st.Tokens = make(map[string]*sharedToken)
	}
	return st, nil
}

func getPending(ctx context.Context, s logical.Storage, key string) (*pendingAuth, error) {
	p := &pendingAuth{}
	ok, err := getJSON(ctx, s, pendingPath(key), p)
	if err != nil || !ok {
		return nil, err
	}
	return p, nil
}

func putConfig(ctx context.Context, s logical.Storage, cfg *configEntry) error {
	return putJSON(ctx, s, configPath, cfg)
}

func putRole(ctx context.Context, s logical.Storage, r *roleEntry) error {
	return putJSON(ctx, s, rolePath(r.Name), r)
}

func deleteRole(ctx context.Context, s logical.Storage, name string) error {
	return s.Delete(ctx, rolePath(name))
}

// deleteProvider removes a provider; its caller has checked its users.
func deleteProvider(ctx context.Context, s logical.Storage, name string) error {
	return s.Delete(ctx, providerPath(name))
}

func getReplaced(ctx context.Context, s logical.Storage, path string) (*replacedToken, error) {
	t := &replacedToken{}
	ok, err := getJSON(ctx, s, path, t)
	if err != nil || !ok {
		return nil, err
	}
	return t, nil
}

// putDueEntry and the index shards are plain records without secrets.
func putDueEntry(ctx context.Context, s logical.Storage, t time.Time, name string) error {
	return s.Put(ctx, &logical.StorageEntry{Key: duePath(t, name)})
}

// listAll returns every key under prefix, descending into sub-folders
// (tokens/<grant_id>/<token_id>).
func listAll(ctx context.Context, s logical.Storage, prefix string) ([]string, error) {
	keys, err := s.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, k := range keys {
		if len(k) > 0 && k[len(k)-1] == '/' {
			sub, err := listAll(ctx, s, prefix+k)
			if err != nil {
				return nil, err
			}
			for _, sk := range sub {
				out = append(out, k+sk)
			}
			continue
		}
		out = append(out, k)
	}
	return out, nil
}
