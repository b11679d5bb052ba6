package backend

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

type testEnv struct {
	t       *testing.T
	b       *backend
	storage *faultyStorage
	up      *fakeUpstream
	clock   *testClock
}

// testClock is real time plus an offset that tests advance: the engine's
// clock (backend.now) without sleeping.
type testClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

// faultyStorage is in-memory storage that fails on demand: failPut and
// failGet return an error for the keys they choose (nil: no fault), and
// beforeGet runs before every read.
type faultyStorage struct {
	logical.InmemStorage
	mu        sync.Mutex
	failPut   func(key string, value []byte) error
	beforeGet func(key string)
}

func (f *faultyStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	f.mu.Lock()
	fail := f.failPut
	f.mu.Unlock()
	if fail != nil {
		if err := fail(e.Key, e.Value); err != nil {
			return err
		}
	}
	return f.InmemStorage.Put(ctx, e)
}

func (f *faultyStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	f.mu.Lock()
	before := f.beforeGet
	f.mu.Unlock()
	if before != nil {
		before(key)
	}
	return f.InmemStorage.Get(ctx, key)
}

func (f *faultyStorage) setFailPut(fn func(key string, value []byte) error) {
	f.mu.Lock()
	f.failPut = fn
	f.mu.Unlock()
}

func (f *faultyStorage) setBeforeGet(fn func(key string)) {
	f.mu.Lock()
	f.beforeGet = fn
	f.mu.Unlock()
}

var errInjected = errors.New("injected storage fault")

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	conf := logical.TestBackendConfig()
	storage := &faultyStorage{}
	conf.StorageView = storage
	raw, err := Factory(context.Background(), conf)
	if err != nil {
		t.Fatal(err)
	}
	b := raw.(*backend)
	clock := &testClock{}
	b.now = clock.Now
	if err := b.Initialize(context.Background(), &logical.InitializationRequest{Storage: conf.StorageView}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Cleanup(context.Background()) })
	env := &testEnv{t: t, b: b, storage: storage, up: newFakeUpstream(t), clock: clock}
	env.mustWrite("providers/up", map[string]any{
		"token_url":         env.up.URL + "/token",
		"revocation_url":    env.up.URL + "/revoke",
		"introspection_url": env.up.URL + "/introspect",
		"client_id":         "vault",
		"client_secret":     "client-secret-value",
	})
	return env
}

func (e *testEnv) do(op logical.Operation, path string, data map[string]any) (*logical.Response, error) {
	e.t.Helper()
	return e.b.HandleRequest(context.Background(), &logical.Request{
		Operation: op, Path: path, Data: data, Storage: e.storage,
	})
}

func (e *testEnv) mustWrite(path string, data map[string]any) *logical.Response {
	e.t.Helper()
	var op logical.Operation = logical.UpdateOperation
	if checked, exists, _ := e.b.HandleExistenceCheck(context.Background(), &logical.Request{
		Operation: logical.CreateOperation, Path: path, Storage: e.storage,
	}); checked && !exists {
		op = logical.CreateOperation
	}
	resp, err := e.do(op, path, data)
	if err != nil || resp.IsError() {
		e.t.Fatalf("write %s: err=%v resp=%v", path, err, resp)
	}
	return resp
}

func (e *testEnv) creds(role string) (*logical.Response, error) {
	return e.do(logical.ReadOperation, "creds/"+role, nil)
}

func (e *testEnv) revoke(resp *logical.Response) error {
	_, err := e.b.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.RevokeOperation, Storage: e.storage, Secret: resp.Secret,
	})
	return err
}

func (e *testEnv) grant(name string) map[string]any {
	e.t.Helper()
	resp, err := e.do(logical.ReadOperation, "grants/"+name, nil)
	if err != nil || resp == nil {
		e.t.Fatalf("read grant %s: %v %v", name, err, resp)
	}
	return resp.Data
}

func statusOf(err error) int {
	var coded logical.HTTPCodedError
	if errors.As(err, &coded) {
		return coded.Code()
	}
	return 0
}

func eventuallyTrue(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
	}
}

// sweep runs the background sweep now, as tidy does.
func (e *testEnv) sweep() tidyStatus {
	return e.b.background.sweep(context.Background(), e.storage)
}

// storedGrant reads a grant straight from storage.
func (e *testEnv) storedGrant(name string) *grantEntry {
	e.t.Helper()
	g, err := getGrant(context.Background(), e.storage, name)
	if err != nil {
		e.t.Fatal(err)
	}
	return g
}

// nonEmpty is true for a non-empty string: a missing key or another type
// is not "set".
func nonEmpty(v any) bool {
	s, ok := v.(string)
	return ok && s != ""
}

// mustRead reads path's data; the object must exist.
func (e *testEnv) mustRead(path string) map[string]any {
	e.t.Helper()
	resp, err := e.do(logical.ReadOperation, path, nil)
	if err != nil || resp == nil || resp.IsError() {
		e.t.Fatalf("read %s: err=%v resp=%v", path, err, resp)
	}
	return resp.Data
}
