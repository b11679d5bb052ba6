package backend

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/hashicorp/vault/sdk/logical"
)

// keyring holds the mount's AES-256-GCM keys that seal refresh tokens,
// client secrets and private keys, on top of Vault's own barrier and seal
// wrapping. Old versions stay until keys/rotate has re-sealed everything.
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
	entry, err := s.Get(ctx, keyringPath)
	if err != nil {
		return nil, fmt.Errorf("reading sealing keys: %w", err)
	}
	kr = &keyring{}
	if entry != nil {
		if err := entry.DecodeJSON(kr); err != nil {
			return nil, fmt.Errorf("decoding sealing keys: %w", err)
		}
	} else {
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

// reseal re-encrypts s under the current key if it is not already.
func (kr *keyring) reseal(s *sealed, aad string) (*sealed, bool, error) {
	if s.isZero() || s.KeyVersion == kr.Current {
		return s, false, nil
	}
	pt, err := kr.open(s, aad)
	if err != nil {
		return nil, false, err
	}
	out, err := kr.seal(pt, aad)
	return out, err == nil, err
}

// Associated data for each kind of sealed value.
func grantAAD(name, id string) string       { return "grant/" + name + "/" + id }
func providerAAD(name, field string) string { return "provider/" + name + "/" + field }
func tokenAAD(path string) string           { return "token/" + path }

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
