package backend

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// fakeUpstream is a small rotating, reuse-detecting OAuth server for unit
// tests of odd upstream behaviour. The end-to-end suite uses the real one.
type fakeUpstream struct {
	*httptest.Server
	mu         sync.Mutex
	seq        int
	refresh    map[string]*fakeRefresh // refresh token -> state
	access     map[string]fakeAccess
	failNext   []int  // statuses for the next token requests
	errorCode  string // error code with failNext 400s
	rotate     bool
	cascade    bool
	refreshes  int
	revoked    []string
	extraScope string
	// noExpiry leaves expires_in out of token responses; expiresIn, when
	// set, replaces the default 300 seconds.
	noExpiry  bool
	expiresIn int
	// codes are authorization codes not yet redeemed; exchanges counts
	// every code redemption.
	codes     map[string]string
	exchanges int
	// gate, when set, holds every token request until it is closed.
	gate chan struct{}
	// devicePolls answer device-code polls in turn: an error code, or ""
	// for approval.
	devicePolls []string
	polls       int
	// fields are added to every token response (Salesforce's
	// instance_url); refreshLifetime, when set, is sent as
	// refresh_token_expires_in with every new refresh token.
	fields          map[string]any
	refreshLifetime int
}

type fakeRefresh struct {
	grant  string
	scopes string
	used   bool
}

type fakeAccess struct {
	grant  string
	scopes string
	active bool
}

func newFakeUpstream(t *testing.T) *fakeUpstream {
	f := &fakeUpstream{refresh: map[string]*fakeRefresh{}, access: map[string]fakeAccess{}, rotate: true, cascade: true}
	mux := http.NewServeMux()
	mux.HandleFunc("/token", f.token)
	mux.HandleFunc("/revoke", f.revoke)
	mux.HandleFunc("/introspect", f.introspect)
	mux.HandleFunc("/.well-known/oauth-authorization-server", f.metadata)
	mux.HandleFunc("/device", f.device)
	f.Server = httptest.NewServer(mux)
	t.Cleanup(f.Close)
	return f
}

func (f *fakeUpstream) mint(scopes string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	rt := fmt.Sprintf("rt-%d-secret", f.seq)
	f.refresh[rt] = &fakeRefresh{grant: fmt.Sprintf("g%d", f.seq), scopes: scopes}
	return rt
}

func (f *fakeUpstream) killGrant(grant string) {
	for k, v := range f.refresh {
		if v.grant == grant {
			delete(f.refresh, k)
		}
	}
	for k, v := range f.access {
		if v.grant == grant {
			v.active = false
			f.access[k] = v
		}
	}
}

func oauthError(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": code})
}

func (f *fakeUpstream) token(w http.ResponseWriter, r *http.Request) {
	r.ParseForm()
	f.mu.Lock()
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		<-gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.injectFailure(w) {
		return
	}
	f.seq++
	var grant, scopes string
	resp := map[string]any{"token_type": "Bearer", "expires_in": 300}
	switch r.PostForm.Get("grant_type") {
	case "refresh_token":
		rt := f.refresh[r.PostForm.Get("refresh_token")]
		if rt == nil {
			oauthError(w, 400, "invalid_grant")
			return
		}
		if rt.used { // reuse detection: the whole grant dies
			f.killGrant(rt.grant)
			oauthError(w, 400, "invalid_grant")
			return
		}
		f.refreshes++
		grant, scopes = rt.grant, rt.scopes
		if s := r.PostForm.Get("scope"); s != "" {
			scopes = s
		}
		if f.rotate {
			rt.used = true
			next := fmt.Sprintf("rt-%d-secret", f.seq)
			f.refresh[next] = &fakeRefresh{grant: rt.grant, scopes: rt.scopes}
			resp["refresh_token"] = next
		}
	case "client_credentials":
		grant, scopes = fmt.Sprintf("cc%d", f.seq), r.PostForm.Get("scope")
	case "urn:ietf:params:oauth:grant-type:token-exchange":
		subject, ok := f.access[r.PostForm.Get("subject_token")]
		if !ok || !subject.active {
			oauthError(w, 400, "invalid_grant")
			return
		}
		// The new token is the client's own: revoking it leaves the grant.
		grant, scopes = fmt.Sprintf("x%d", f.seq), subject.scopes
		if s := r.PostForm.Get("scope"); s != "" {
			scopes = s
		}
		resp["issued_token_type"] = "urn:ietf:params:oauth:token-type:access_token"
	case "urn:ietf:params:oauth:grant-type:device_code":
		f.polls++
		if len(f.devicePolls) > 0 && f.devicePolls[0] != "" {
			code := f.devicePolls[0]
			f.devicePolls = f.devicePolls[1:]
			// Some servers (GitHub) say it with HTTP 200.
			oauthError(w, map[bool]int{true: 200, false: 400}[f.polls%2 == 0], code)
			return
		}
		grant = fmt.Sprintf("g%d", f.seq)
		next := fmt.Sprintf("rt-%d-secret", f.seq)
		f.refresh[next] = &fakeRefresh{grant: grant, scopes: "read"}
		resp["refresh_token"] = next
		scopes = "read"
	case "authorization_code":
		f.exchanges++
		code := r.PostForm.Get("code")
		scopes, ok := f.codes[code]
		if !ok {
			oauthError(w, 400, "invalid_grant")
			return
		}
		delete(f.codes, code)
		grant = fmt.Sprintf("g%d", f.seq)
		next := fmt.Sprintf("rt-%d-secret", f.seq)
		f.refresh[next] = &fakeRefresh{grant: grant, scopes: scopes}
		resp["refresh_token"] = next
	default:
		oauthError(w, 400, "unsupported_grant_type")
		return
	}
	if f.expiresIn > 0 {
		resp["expires_in"] = f.expiresIn
	}
	if f.noExpiry {
		delete(resp, "expires_in")
	}
	if f.extraScope != "" {
		scopes = strings.TrimSpace(scopes + " " + f.extraScope)
	}
	for k, v := range f.fields {
		resp[k] = v
	}
	if _, ok := resp["refresh_token"]; ok && f.refreshLifetime > 0 {
		resp["refresh_token_expires_in"] = f.refreshLifetime
	}
	at := fmt.Sprintf("at-%d", f.seq)
	f.access[at] = fakeAccess{grant: grant, scopes: scopes, active: true}
	resp["access_token"], resp["scope"] = at, scopes
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resp)
}

func (f *fakeUpstream) revoke(w http.ResponseWriter, r *http.Request) {
	r.ParseForm()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.injectFailure(w) {
		return
	}
	tok := r.PostForm.Get("token")
	f.revoked = append(f.revoked, tok)
	if a, ok := f.access[tok]; ok {
		a.active = false
		f.access[tok] = a
		if f.cascade {
			f.killGrant(a.grant)
		}
	}
	if rt, ok := f.refresh[tok]; ok {
		f.killGrant(rt.grant)
	}
}

func (f *fakeUpstream) introspect(w http.ResponseWriter, r *http.Request) {
	r.ParseForm()
	f.mu.Lock()
	defer f.mu.Unlock()
	if rt, ok := f.refresh[r.PostForm.Get("token")]; ok {
		json.NewEncoder(w).Encode(map[string]any{"active": !rt.used, "scope": rt.scopes, "sub": "user-" + rt.grant})
		return
	}
	a := f.access[r.PostForm.Get("token")]
	json.NewEncoder(w).Encode(map[string]any{"active": a.active, "scope": a.scopes})
}

// injectFailure answers with the next queued failure, if any; f.mu is held.
func (f *fakeUpstream) injectFailure(w http.ResponseWriter) bool {
	if len(f.failNext) == 0 {
		return false
	}
	status := f.failNext[0]
	f.failNext = f.failNext[1:]
	if status == http.StatusBadRequest || status == http.StatusOK {
		oauthError(w, status, f.errorCode)
	} else {
		w.WriteHeader(status)
	}
	return true
}

func (f *fakeUpstream) fail(code string, statuses ...int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failNext, f.errorCode = statuses, code
}

func (f *fakeUpstream) isActive(token string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.access[token].active
}

func (f *fakeUpstream) grantAlive(grant string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, v := range f.refresh {
		if v.grant == grant && !v.used {
			return true
		}
	}
	return false
}

// issueCode makes an authorization code for a new grant with scopes.
func (f *fakeUpstream) issueCode(scopes string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	code := fmt.Sprintf("code-%d", f.seq)
	if f.codes == nil {
		f.codes = map[string]string{}
	}
	f.codes[code] = scopes
	return code
}

// wasRevoked says whether token was sent to the revocation endpoint.
func (f *fakeUpstream) wasRevoked(token string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, t := range f.revoked {
		if t == token {
			return true
		}
	}
	return false
}

// set changes the fake's behaviour under its lock.
func (f *fakeUpstream) set(change func(f *fakeUpstream)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(f)
}

// refreshDirect redeems a refresh token at the fake as another client
// would (a node that died before storing the answer).
func (f *fakeUpstream) refreshDirect(rt string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r := f.refresh[rt]; r != nil && f.rotate {
		r.used = true
		f.seq++
		f.refresh[fmt.Sprintf("rt-%d-secret", f.seq)] = &fakeRefresh{grant: r.grant, scopes: r.scopes}
	}
}

func (f *fakeUpstream) exchangeCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.exchanges
}

func (f *fakeUpstream) refreshCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.refreshes
}

// metadata is RFC 8414 discovery; the server says it sends iss in
// authorization responses (RFC 9207).
func (f *fakeUpstream) metadata(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"issuer":                 f.URL,
		"token_endpoint":         f.URL + "/token",
		"authorization_endpoint": f.URL + "/authorize",
		"revocation_endpoint":    f.URL + "/revoke",
		"authorization_response_iss_parameter_supported": true,
	})
}

func (f *fakeUpstream) device(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"device_code": "device-code-secret", "user_code": "ABCD-EFGH",
		"verification_uri": f.URL + "/activate", "expires_in": 600, "interval": 1,
	})
}
