package backend

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// keyring holds the mount's AES-256-GCM keys that seal refresh tokens,
// client secrets and private keys, on top of Vault's own barrier and seal
// wrapping. Old versions stay until keys/rotate has verified that no stored
// value names them.
type keyring struct {
	Current int            `json:"current"`
	Keys    map[int][]byte `json:"keys"`
}

// sealed is a ciphertext with the key version that made it.
type sealed struct {
	KeyVersion int    `json:"key_version"`
	Data       []byte `json:"data"` // nonce || ciphertext || tag
}

func (s *sealed) isZero() bool { return s == nil || len(s.Data) == 0 }

// sealedField is one sealed value of a record with the associated data that
// binds it to its owner, so a blob cannot be moved to another object.
type sealedField struct {
	value **sealed
	aad   string
}

// sealedRecord is a stored record that holds sealed values. key is the
// record's storage key.
type sealedRecord interface {
	sealedFields(key string) []sealedField
}

// sealedKind is one kind of stored record that holds sealed values. The
// table of them (sealedKinds) is what SealWrapStorage and keys/rotate both
// iterate: a new kind added there is wrapped, re-sealed and verified.
type sealedKind struct {
	name   string
	prefix string
	// lock takes the lock every writer of the record holds from load to
	// store, so a re-seal never races a writer.
	lock func(key string) (unlock func())
	// load returns the record as its writers see it (nil if gone).
	load func(ctx context.Context, s logical.Storage, key string) (sealedRecord, error)
	// store writes it back after a re-seal; nil means storeSealed.
	store func(ctx context.Context, s logical.Storage, key string, rec sealedRecord) error
}

// sealedKinds lists every kind of record that holds sealed values.
func (b *backend) sealedKinds() []sealedKind {
	lockKey := func(prefix string) func(string) func() {
		return func(key string) func() { return b.recordLocks.Lock(prefix + key) }
	}
	return []sealedKind{
		{
			name: "grant", prefix: grantPrefix, lock: lockKey(grantPrefix),
			load: func(ctx context.Context, s logical.Storage, name string) (sealedRecord, error) {
				return asRecord(b.loadGrantLocked(ctx, s, name))
			},
			store: func(ctx context.Context, s logical.Storage, _ string, rec sealedRecord) error {
				return b.storeGrant(ctx, s, rec.(*grantEntry))
			},
		},
		{
			name: "provider", prefix: providerPrefix, lock: lockKey(providerPrefix),
			load: func(ctx context.Context, s logical.Storage, name string) (sealedRecord, error) {
				return asRecord(getProvider(ctx, s, name))
			},
		},
		{
			name: "pending authorization", prefix: pendingPrefix, lock: lockKey(pendingPrefix),
			load: func(ctx context.Context, s logical.Storage, key string) (sealedRecord, error) {
				return asRecord(getPending(ctx, s, key))
			},
		},
		{
			name: "outstanding token", prefix: outstandingPrefix, lock: lockKey(outstandingPrefix),
			load: func(ctx context.Context, s logical.Storage, key string) (sealedRecord, error) {
				return asRecord(getOutstanding(ctx, s, outstandingPrefix+key))
			},
		},
		{
			name: "replaced token", prefix: replacedPrefix, lock: lockKey(replacedPrefix),
			load: func(ctx context.Context, s logical.Storage, key string) (sealedRecord, error) {
				return asRecord(getReplaced(ctx, s, replacedPrefix+key))
			},
		},
		{
			name: "shared token", prefix: sharedTokenPrefix,
			// Shared tokens live in memory and are written by group commit
			// (shared_tokens.go): their state lock is the record lock.
			lock: func(role string) func() {
				st := b.sharedStateOf(role)
				st.mu.Lock()
				return st.mu.Unlock
			},
			load: func(ctx context.Context, s logical.Storage, role string) (sealedRecord, error) {
				st := b.sharedStateOf(role)
				if err := st.loadLocked(ctx, s); err != nil {
					return nil, err
				}
				return st.tokens, nil
			},
			store: func(ctx context.Context, s logical.Storage, role string, _ sealedRecord) error {
				st := b.sharedStateOf(role)
				wait := st.commitLocked(ctx, s)
				st.mu.Unlock() // commitLocked's wait must run unlocked
				err := wait()
				st.mu.Lock()
				return err
			},
		},
	}
}

// asRecord turns a typed load into a sealedRecord, nil when absent.
func asRecord[T interface {
	*E
	sealedRecord
}, E any](rec T, err error) (sealedRecord, error) {
	if rec == nil || err != nil {
		return nil, err
	}
	return rec, nil
}

// sealWrapPaths are the prefixes Vault seal-wraps: every sealed kind and
// the keyring.
func (b *backend) sealWrapPaths() []string {
	paths := []string{keysPrefix}
	for _, k := range b.sealedKinds() {
		paths = append(paths, k.prefix)
	}
	return paths
}

// sealingKeys returns the mount's keyring, creating it on first use.
func (b *backend) sealingKeys(ctx context.Context, s logical.Storage) (*keyring, error) {
	b.cacheMu.RLock()
	kr := b.keyring
	b.cacheMu.RUnlock()
	if kr != nil {
		return kr, nil
	}

	b.cacheMu.Lock()
	defer b.cacheMu.Unlock()
	if b.keyring != nil {
		return b.keyring, nil
	}
	kr, err := getKeyring(ctx, s)
	if err != nil {
		return nil, err
	}
	if kr == nil {
		key, err := newAESKey()
		if err != nil {
			return nil, err
		}
		kr = &keyring{Current: 1, Keys: map[int][]byte{1: key}}
		if err := putJSON(ctx, s, keyringPath, kr); err != nil {
			return nil, fmt.Errorf("storing sealing keys: %w", err)
		}
	}
	b.keyring = kr
	return kr, nil
}

func (b *backend) setKeyring(kr *keyring) {
	b.cacheMu.Lock()
	b.keyring = kr
	b.cacheMu.Unlock()
}

// storeSealed seals with the current key and stores, as one step that
// keys/rotate cannot split: it holds keysMu for reading, so no key is
// switched or retired between the seal and the write. seal (optional)
// seals new values into rec; every other sealed field of rec is brought to
// the current key too, so a record loaded before a rotation can never
// write an old key back. The caller holds the record's lock.
func (b *backend) storeSealed(ctx context.Context, s logical.Storage, key string, rec sealedRecord, seal func(*keyring) error) error {
	b.keysMu.RLock()
	defer b.keysMu.RUnlock()
	kr, err := b.sealingKeys(ctx, s)
	if err != nil {
		return err
	}
	if seal != nil {
		if err := seal(kr); err != nil {
			return err
		}
	}
	if _, err := resealRecord(kr, key, rec); err != nil {
		return err
	}
	return putJSON(ctx, s, key, rec)
}

func newAESKey() ([]byte, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generating sealing key: %w", err)
	}
	return key, nil
}

// seal encrypts plaintext under the current key. aad binds the ciphertext
// to the object that owns it, so it cannot be moved to another one.
func (kr *keyring) seal(plaintext, aad string) (*sealed, error) {
	aead, err := kr.aead(kr.Current)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plaintext)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return &sealed{KeyVersion: kr.Current, Data: aead.Seal(nonce, nonce, []byte(plaintext), []byte(aad))}, nil
}

// sealOptional seals value, or clears the field when value is empty.
func (kr *keyring) sealOptional(value, aad string) (*sealed, error) {
	if value == "" {
		return nil, nil
	}
	return kr.seal(value, aad)
}

var errUnsealFailed = errors.New("sealed value does not belong to this object or its key is gone")

func (kr *keyring) open(s *sealed, aad string) (string, error) {
	if s.isZero() {
		return "", errors.New("no sealed value")
	}
	aead, err := kr.aead(s.KeyVersion)
	if err != nil {
		return "", err
	}
	if len(s.Data) < aead.NonceSize() {
		return "", errUnsealFailed
	}
	nonce, ct := s.Data[:aead.NonceSize()], s.Data[aead.NonceSize():]
	pt, err := aead.Open(nil, nonce, ct, []byte(aad))
	if err != nil {
		return "", errUnsealFailed
	}
	return string(pt), nil
}

func (kr *keyring) aead(version int) (cipher.AEAD, error) {
	key, ok := kr.Keys[version]
	if !ok {
		return nil, fmt.Errorf("sealing key version %d is not in the keyring", version)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// resealRecord brings every sealed field of rec to the current key and
// reports whether anything changed.
func resealRecord(kr *keyring, key string, rec sealedRecord) (bool, error) {
	changed := false
	for _, f := range rec.sealedFields(key) {
		s := *f.value
		if s.isZero() || s.KeyVersion == kr.Current {
			continue
		}
		pt, err := kr.open(s, f.aad)
		if err != nil {
			return false, err
		}
		if *f.value, err = kr.seal(pt, f.aad); err != nil {
			return false, err
		}
		changed = true
	}
	return changed, nil
}

// keyVersionsOf returns the key versions rec's sealed fields name.
func keyVersionsOf(key string, rec sealedRecord) []int {
	var out []int
	for _, f := range rec.sealedFields(key) {
		if s := *f.value; !s.isZero() {
			out = append(out, s.KeyVersion)
		}
	}
	return out
}

// rotation is what keys/rotate did.
type rotation struct {
	KeyVersion int
	Resealed   map[string]int // by kind
	// Retained are old key versions kept because a stored value still
	// names them; Stale names (up to a few of) those values.
	Retained []int
	Stale    []string
	Duration time.Duration
}

// resealWorkers bounds how many records are re-sealed at once: each is a
// storage read and write, so a few in flight hide the round trips.
const resealWorkers = 8

// maxStaleReported bounds the stale values named in a rotation's report.
const maxStaleReported = 10

// rotateKeys adds a new sealing key, re-seals every sealed kind under it,
// verifies that no stored value names an old key and only then retires the
// old keys. A value that still names one keeps its key in the keyring and
// is reported; running keys/rotate again finishes the job.
func (b *backend) rotateKeys(ctx context.Context, s logical.Storage) (*rotation, error) {
	b.rotating.Lock()
	defer b.rotating.Unlock()
	start := time.Now()

	// Switch: from here on every seal uses the new key. keysMu waits for
	// every seal-and-store that may still hold the old keyring.
	b.keysMu.Lock()
	old, err := b.sealingKeys(ctx, s)
	if err != nil {
		b.keysMu.Unlock()
		return nil, err
	}
	key, err := newAESKey()
	if err != nil {
		b.keysMu.Unlock()
		return nil, err
	}
	kr := &keyring{Keys: maps.Clone(old.Keys)}
	for v := range kr.Keys {
		kr.Current = max(kr.Current, v)
	}
	kr.Current++
	kr.Keys[kr.Current] = key
	if err := putJSON(ctx, s, keyringPath, kr); err != nil {
		b.keysMu.Unlock()
		return nil, err
	}
	b.setKeyring(kr)
	b.keysMu.Unlock()

	rot := &rotation{KeyVersion: kr.Current, Resealed: map[string]int{}}
	for _, kind := range b.sealedKinds() {
		n, err := b.resealKind(ctx, s, kr, kind)
		rot.Resealed[kind.name] += n
		if err != nil {
			return nil, fmt.Errorf("re-sealing under key version %d stopped (run keys/rotate again to finish): %w", kr.Current, err)
		}
	}

	stale, err := b.staleSealed(ctx, s, kr.Current)
	if err != nil {
		return nil, fmt.Errorf("verifying the re-seal under key version %d: %w", kr.Current, err)
	}
	b.keysMu.Lock()
	final := &keyring{Current: kr.Current, Keys: map[int][]byte{kr.Current: key}}
	for _, st := range stale {
		final.Keys[st.version] = kr.Keys[st.version]
	}
	err = putJSON(ctx, s, keyringPath, final)
	if err == nil {
		b.setKeyring(final)
	}
	b.keysMu.Unlock()
	if err != nil {
		return nil, err
	}
	for v := range final.Keys {
		if v != final.Current {
			rot.Retained = append(rot.Retained, v)
		}
	}
	sort.Ints(rot.Retained)
	for _, st := range stale {
		if len(rot.Stale) < maxStaleReported {
			rot.Stale = append(rot.Stale, st.what)
		}
	}
	if len(stale) > 0 {
		b.logger.Warn("keys/rotate kept old sealing keys: stored values still name them; run keys/rotate again",
			"retained", rot.Retained, "values", len(stale))
	}
	rot.Duration = time.Since(start)
	return rot, nil
}

// resealKind re-seals every stored record of one kind, a few at a time.
// A record deleted meanwhile is skipped.
func (b *backend) resealKind(ctx context.Context, s logical.Storage, kr *keyring, kind sealedKind) (int, error) {
	keys, err := listAll(ctx, s, kind.prefix)
	if err != nil {
		return 0, err
	}
	var resealed atomic.Int64
	err = forEachKey(ctx, keys, func(key string) error {
		changed, err := b.resealOne(ctx, s, kr, kind, key)
		if err != nil {
			return fmt.Errorf("%s %q: %w", kind.name, key, err)
		}
		if changed {
			resealed.Add(1)
		}
		return nil
	})
	return int(resealed.Load()), err
}

// forEachKey runs fn on every key, resealWorkers at a time, and stops at
// the first error.
func forEachKey(ctx context.Context, keys []string, fn func(key string) error) error {
	var (
		next     atomic.Int64
		firstErr error
		errOnce  sync.Once
		wg       sync.WaitGroup
	)
	for w := 0; w < resealWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(keys) || ctx.Err() != nil {
					return
				}
				if err := fn(keys[i]); err != nil {
					errOnce.Do(func() { firstErr = err })
					next.Store(int64(len(keys))) // stop the others
					return
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}

func (b *backend) resealOne(ctx context.Context, s logical.Storage, kr *keyring, kind sealedKind, key string) (bool, error) {
	unlock := kind.lock(key)
	defer unlock()
	rec, err := kind.load(ctx, s, key)
	if err != nil || rec == nil {
		return false, err
	}
	path := kind.prefix + key
	changed, err := resealRecord(kr, path, rec)
	if err != nil || !changed {
		return false, err
	}
	if kind.store != nil {
		return true, kind.store(ctx, s, key, rec)
	}
	return true, b.storeSealed(ctx, s, path, rec, nil)
}

type staleValue struct {
	version int
	what    string
}

// staleSealed lists every stored (or unsaved) value that names a key other
// than current: what keys/rotate must not retire.
func (b *backend) staleSealed(ctx context.Context, s logical.Storage, current int) ([]staleValue, error) {
	var (
		mu    sync.Mutex
		stale []staleValue
	)
	for _, kind := range b.sealedKinds() {
		keys, err := listAll(ctx, s, kind.prefix)
		if err != nil {
			return nil, err
		}
		if kind.prefix == sharedTokenPrefix {
			keys = append(keys, b.sharedRoles()...)
		}
		if kind.prefix == grantPrefix {
			keys = append(keys, b.unsavedGrantNames()...)
		}
		slices.Sort(keys)
		keys = slices.Compact(keys)
		err = forEachKey(ctx, keys, func(key string) error {
			unlock := kind.lock(key)
			rec, err := kind.load(ctx, s, key)
			var versions []int
			if err == nil && rec != nil {
				versions = keyVersionsOf(kind.prefix+key, rec)
			}
			unlock()
			if err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			for _, v := range versions {
				if v != current {
					stale = append(stale, staleValue{version: v, what: kind.name + " " + key})
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return stale, nil
}

// Associated data for each kind of sealed value.
func grantAAD(name, id string) string       { return "grant/" + name + "/" + id }
func providerAAD(name, field string) string { return "provider/" + name + "/" + field }
func tokenAAD(path string) string           { return "token/" + path }
func pendingAAD(key string) string          { return "pending/" + key }
func sharedAAD(role, id string) string      { return tokenAAD(sharedPath(role) + "/" + id) }

func (g *grantEntry) sealedFields(string) []sealedField {
	return []sealedField{{&g.RefreshToken, g.aad()}}
}

func (p *providerEntry) sealedFields(string) []sealedField {
	return []sealedField{
		{&p.ClientSecret, providerAAD(p.Name, "client_secret")},
		{&p.ClientPrivateKey, providerAAD(p.Name, "client_private_key")},
	}
}

func (p *pendingAuth) sealedFields(path string) []sealedField {
	return []sealedField{{&p.Secret, pendingAAD(path[len(pendingPrefix):])}}
}

func (t *outstandingToken) sealedFields(path string) []sealedField {
	return []sealedField{{&t.AccessToken, tokenAAD(path)}}
}

func (st *sharedTokens) sealedFields(path string) []sealedField {
	role := path[len(sharedTokenPrefix):]
	ids := slices.Sorted(maps.Keys(st.Tokens))
	out := make([]sealedField, 0, len(ids))
	for _, id := range ids {
		out = append(out, sealedField{&st.Tokens[id].AccessToken, sharedAAD(role, id)})
	}
	return out
}
