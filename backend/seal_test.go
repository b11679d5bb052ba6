package backend

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

func TestSealedRefreshTokenCannotMoveBetweenGrants(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("grants/a", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	env.mustWrite("grants/b", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	ctx := context.Background()
	a, _ := getGrant(ctx, env.storage, "a")
	b, _ := getGrant(ctx, env.storage, "b")
	b.RefreshToken = a.RefreshToken
	if err := env.b.storeGrant(ctx, env.storage, b); err != nil {
		t.Fatal(err)
	}
	env.mustWrite("roles/r", map[string]any{"grant": "b"})
	if _, err := env.creds("r"); err == nil || !strings.Contains(err.Error(), "does not belong") {
		t.Fatalf("a moved sealed blob was accepted: %v", err)
	}
	raw, _ := env.storage.Get(ctx, "grants/a")
	if strings.Contains(string(raw.Value), "rt-") {
		t.Fatal("refresh token stored in the clear")
	}
}

func TestKeysRotateReseals(t *testing.T) {
	env := newTestEnv(t)
	for i := 0; i < 5; i++ {
		env.mustWrite(fmt.Sprintf("grants/g%d", i), map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	}
	resp := env.mustWrite("keys/rotate", nil)
	if resp.Data["key_version"] != 2 || resp.Data["grants_resealed"] != 5 || resp.Data["providers_resealed"] != 1 {
		t.Fatalf("rotate = %v", resp.Data)
	}
	kr, _ := env.b.sealingKeys(context.Background(), env.storage)
	if len(kr.Keys) != 1 {
		t.Fatalf("old key kept: %d keys", len(kr.Keys))
	}
	env.b.dropCaches(providerPath("up"))
	env.mustWrite("roles/r", map[string]any{"grant": "g3"})
	if _, err := env.creds("r"); err != nil {
		t.Fatalf("creds after rotation: %v", err)
	}
}

// storedKeyVersions returns the key version of every sealed value in
// storage, by storage key.
func storedKeyVersions(t *testing.T, env *testEnv) map[string][]int {
	t.Helper()
	ctx := context.Background()
	out := map[string][]int{}
	for _, prefix := range []string{grantPrefix, providerPrefix, pendingPrefix, outstandingPrefix, sharedTokenPrefix, replacedPrefix} {
		keys, err := listAll(ctx, env.storage, prefix)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			entry, err := env.storage.Get(ctx, prefix+k)
			if err != nil || entry == nil {
				continue
			}
			// Every sealed value is {"key_version":N,"data":...}.
			for _, m := range regexp.MustCompile(`"key_version":(\d+)`).FindAllStringSubmatch(string(entry.Value), -1) {
				v, _ := strconv.Atoi(m[1])
				out[prefix+k] = append(out[prefix+k], v)
			}
		}
	}
	return out
}

// A provider deleted between the re-seal pass's List and its read ended
// the pass early with success, and the old key was retired under values
// that still needed it.
func TestKeysRotateSurvivesARecordDeletedMidPass(t *testing.T) {
	env := newTestEnv(t)
	for _, name := range []string{"p1", "p2", "p3"} {
		env.mustWrite("providers/"+name, map[string]any{"token_url": env.up.URL + "/token", "client_id": "c", "client_secret": "s-" + name})
	}
	env.storage.setBeforeGet(func(key string) {
		if key == "providers/p1" {
			env.storage.InmemStorage.Delete(context.Background(), key)
		}
	})
	resp := env.mustWrite("keys/rotate", nil)
	env.storage.setBeforeGet(nil)
	kr, _ := env.b.sealingKeys(context.Background(), env.storage)
	for key, versions := range storedKeyVersions(t, env) {
		for _, v := range versions {
			if _, ok := kr.Keys[v]; !ok {
				t.Fatalf("%s is sealed under key %d, which keys/rotate retired (response %v)", key, v, resp.Data)
			}
		}
	}
	// Every provider still works.
	env.b.dropCaches(providerPath("p3"))
	if _, err := env.b.provider(context.Background(), env.storage, "p3"); err != nil {
		t.Fatal(err)
	}
}

// keys/rotate with every sealed kind present and writes racing it: no
// value may end up under a retired key, and a value it could not re-seal
// keeps its key and is reported.
func TestKeysRotateWithRacingWritesNeverOrphansAValue(t *testing.T) {
	env := newTestEnv(t)
	env.up.set(func(f *fakeUpstream) { f.cascade = false })
	env.mustWrite("config", map[string]any{"redirect_uri": "http://127.0.0.1:8200/v1/oauth/callback"})
	env.mustWrite("providers/up", map[string]any{"revocation_cascades": false, "authorization_url": env.up.URL + "/authorize"})
	for i := 0; i < 8; i++ {
		env.mustWrite(fmt.Sprintf("grants/g%d", i), map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
		env.mustWrite(fmt.Sprintf("roles/r%d", i), map[string]any{"grant": fmt.Sprintf("g%d", i)})
	}
	env.mustWrite("roles/shared", map[string]any{"grant": "g0", "token_reuse": true})
	env.mustWrite("roles/cc", map[string]any{"grant_type": "client_credentials", "provider": "up", "token_reuse": true})
	env.mustWrite("grants/web/authorize", map[string]any{"provider": "up"})          // a pending authorization
	env.mustWrite("grants/g7", map[string]any{"refresh_token": env.up.mint("read")}) // a replaced token

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var writes atomic.Int64
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				switch i % 4 {
				case 0:
					env.creds(fmt.Sprintf("r%d", (w+i)%7)) // refresh: grant + outstanding token
				case 1:
					env.creds("shared")
				case 2:
					env.do(logical.UpdateOperation, "providers/up", map[string]any{"client_secret": fmt.Sprintf("secret-%d-%d", w, i)})
				case 3:
					env.do(logical.UpdateOperation, fmt.Sprintf("grants/g%d", w), map[string]any{"refresh_token": env.up.mint("read")})
				}
				writes.Add(1)
			}
		}(w)
	}
	var rotations []*logical.Response
	for i := 0; i < 50 && (i < 3 || writes.Load() < 40); i++ {
		rotations = append(rotations, env.mustWrite("keys/rotate", nil))
	}
	close(stop)
	wg.Wait()
	if writes.Load() < 10 {
		t.Fatalf("only %d writes raced the rotations", writes.Load())
	}
	kr, _ := env.b.sealingKeys(context.Background(), env.storage)
	last := rotations[len(rotations)-1].Data
	for key, versions := range storedKeyVersions(t, env) {
		for _, v := range versions {
			if _, ok := kr.Keys[v]; !ok {
				t.Fatalf("%s is sealed under key %d, which keys/rotate retired (last rotation: %v)", key, v, last)
			}
		}
	}
	if len(kr.Keys) > 1 && len(last["retained_key_versions"].([]int)) == 0 {
		t.Fatalf("keyring keeps %d keys but keys/rotate reported none retained", len(kr.Keys))
	}
	// A final rotation with nothing racing retires every old key.
	resp := env.mustWrite("keys/rotate", nil)
	kr, _ = env.b.sealingKeys(context.Background(), env.storage)
	if len(kr.Keys) != 1 || len(resp.Data["retained_key_versions"].([]int)) != 0 {
		t.Fatalf("quiet rotation kept keys: %v", resp.Data)
	}
	for i := 0; i < 7; i++ {
		if _, err := env.creds(fmt.Sprintf("r%d", i)); err != nil {
			t.Fatalf("creds r%d after rotations: %v", i, err)
		}
	}
}

// A value keys/rotate cannot re-seal keeps its key, and both the response
// and tidy/status say so.
func TestKeysRotateKeepsAKeyAStoredValueStillNames(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	// The re-seal of grant g fails to store; everything else works.
	env.storage.setFailPut(func(key string, _ []byte) error {
		if key == "grants/g" {
			return errInjected
		}
		return nil
	})
	_, err := env.do(logical.UpdateOperation, "keys/rotate", nil)
	env.storage.setFailPut(nil)
	if err == nil {
		t.Fatal("a failed re-seal reported success")
	}
	kr, _ := env.b.sealingKeys(context.Background(), env.storage)
	if _, ok := kr.Keys[1]; !ok {
		t.Fatal("the key grant g is sealed under was retired")
	}
	status, err := env.do(logical.ReadOperation, "tidy/status", nil)
	if err != nil || fmt.Sprint(status.Data["sealing_key_versions"]) != "[1 2]" {
		t.Fatalf("tidy/status does not show the retained key: %v %v", err, status)
	}
	env.mustWrite("roles/r", map[string]any{"grant": "g"})
	if _, err := env.creds("r"); err != nil {
		t.Fatalf("grant unreadable after a failed rotation: %v", err)
	}
	resp := env.mustWrite("keys/rotate", nil)
	if len(resp.Data["retained_key_versions"].([]int)) != 0 {
		t.Fatalf("second rotation: %v", resp.Data)
	}
}

func TestKeysRotateResealsSharedTokens(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("roles/cc", map[string]any{"grant_type": "client_credentials", "provider": "up", "token_reuse": true})
	first, err := env.creds("cc")
	if err != nil {
		t.Fatal(err)
	}
	resp := env.mustWrite("keys/rotate", nil)
	if resp.Data["shared_resealed"] != 1 {
		t.Fatalf("rotate = %v", resp.Data)
	}
	env.b.Invalidate(context.Background(), sharedPath("cc")) // read it back from storage
	again, err := env.creds("cc")
	if err != nil || again.Data["access_token"] != first.Data["access_token"] {
		t.Fatalf("shared token after rotation: %v %v", err, again)
	}
}
