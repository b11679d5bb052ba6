package imitations

import (
	"net/http"
	"slices"
	"strconv"
	"time"
)

// failure is a kind of token endpoint failure; each provider answers it in
// its own shape.
type failure int

const (
	failClient           failure = iota // unknown client or wrong secret
	failClientAuthMethod                // client authenticated in a way the provider does not take
	failCode                            // bad, used or expired code, or redirect/PKCE mismatch
	failRefresh                         // dead, unknown, rotated-away or expired refresh token
	failRefreshExpired                  // a refresh token past its lifetime (some providers say so)
	failUnsupportedGrant
	failInvalidRequest // missing parameter, malformed body
	failRateLimited
	// device flow
	failPending
	failSlowDown
	failDeviceExpired
	failDenied
	failBadDeviceCode
)

const (
	rotateNone    = iota // refresh returns no refresh token; the old one lives on
	rotateSame           // refresh returns the same refresh token again
	rotateKillOld        // a new refresh token; the old one dies
	rotateKeepOld        // a new refresh token; the old one stays valid
)

// tokenSpec is how one provider's token endpoint behaves.
type tokenSpec struct {
	// auth lists the client authentication methods taken: "basic", "post".
	auth []string
	// publicDevice: device polls need only client_id (GitHub, Microsoft
	// public clients, GitLab).
	publicDevice bool
	// secretOptionalForDeviceRefresh: GitHub lets refresh tokens from the
	// device flow be used without the secret.
	rotate             int
	refreshKillsAccess bool // refreshing kills the grant's older access tokens
	redirectPolicy     int  // redirectRFC, redirectAlways or redirectLax
	// noSlowDown: the provider documents no slow_down; early polls get
	// authorization_pending (Microsoft).
	noSlowDown bool
	// codeWithoutGrantType: a request with a code and no grant_type is a
	// code exchange (GitHub documents no grant_type for it).
	codeWithoutGrantType bool
	fail                 func(s *Server, w http.ResponseWriter, r *http.Request, f failure, detail string)
	success              func(s *Server, w http.ResponseWriter, r *http.Request, req *request, g *grant, m Minted, grantType string)
}

// serveToken is the shared token endpoint.
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request, spec *tokenSpec) {
	req, err := parse(r)
	if err != nil {
		spec.fail(s, w, r, failInvalidRequest, err.Error())
		return
	}
	if s.takeRateLimit() {
		spec.fail(s, w, r, failRateLimited, "")
		return
	}
	grantType := req.params.Get("grant_type")
	if grantType == "" && spec.codeWithoutGrantType && req.params.Get("code") != "" {
		grantType = "authorization_code"
	}
	device := grantType == "urn:ietf:params:oauth:grant-type:device_code"
	if req.clientID == "" {
		spec.fail(s, w, r, failClient, "no client_id")
		return
	}
	if req.clientID != s.ClientID {
		spec.fail(s, w, r, failClient, "unknown client_id")
		return
	}
	switch {
	case req.authMethod == "none" && device && spec.publicDevice:
	case req.authMethod == "none":
		spec.fail(s, w, r, failClient, "no client secret")
		return
	case !slices.Contains(spec.auth, req.authMethod):
		spec.fail(s, w, r, failClientAuthMethod, "client authentication method "+req.authMethod+" not accepted")
		return
	case req.secret != s.ClientSecret:
		spec.fail(s, w, r, failClient, "wrong client secret")
		return
	}
	s.mu.Lock()
	switch grantType {
	case "authorization_code":
		code := req.params.Get("code")
		if code == "" {
			s.mu.Unlock()
			spec.fail(s, w, r, failInvalidRequest, "missing code")
			return
		}
		c, reason := s.redeemCode(code, req.params.Get("redirect_uri"), req.params.Get("code_verifier"), spec.redirectPolicy)
		if c == nil {
			s.mu.Unlock()
			spec.fail(s, w, r, failCode, reason)
			return
		}
		g := s.newGrant(c.scopes, c.offline)
		for k, v := range c.extra {
			g.extra[k] = v
		}
		m := s.issue(g, g.offline)
		s.mu.Unlock()
		spec.success(s, w, r, req, g, m, grantType)
	case "refresh_token":
		rt := req.params.Get("refresh_token")
		if rt == "" {
			s.mu.Unlock()
			spec.fail(s, w, r, failInvalidRequest, "missing refresh_token")
			return
		}
		t, ok := s.refreshLookup(rt)
		if !ok {
			expired := t != nil && !t.dead && t.g.alive && !t.expires.IsZero() && !s.now().Before(t.expires)
			s.mu.Unlock()
			switch {
			case expired:
				spec.fail(s, w, r, failRefreshExpired, "expired")
			case t == nil:
				spec.fail(s, w, r, failRefresh, "unknown")
			default:
				spec.fail(s, w, r, failRefresh, "revoked")
			}
			return
		}
		g := t.g
		if spec.refreshKillsAccess {
			s.killAccessTokens(g)
		}
		var m Minted
		m.AccessToken = s.newToken(g, false)
		switch spec.rotate {
		case rotateSame:
			m.RefreshToken = rt
		case rotateKillOld:
			m.RefreshToken = s.newToken(g, true)
			t.dead, t.replacedBy = true, m.RefreshToken
		case rotateKeepOld:
			m.RefreshToken = s.newToken(g, true)
			t.replacedBy = m.RefreshToken
		}
		s.mu.Unlock()
		spec.success(s, w, r, req, g, m, grantType)
	case "urn:ietf:params:oauth:grant-type:device_code":
		dc := req.params.Get("device_code")
		d := s.devices[dc]
		now := s.now()
		var f failure = -1
		switch {
		case d == nil || d.done:
			f = failBadDeviceCode
		case !now.Before(d.expires):
			f = failDeviceExpired
		case d.denied:
			d.done = true
			f = failDenied
		case d.approved:
		case !spec.noSlowDown && !d.lastPoll.IsZero() && now.Sub(d.lastPoll) < d.interval:
			// RFC 8628 3.5: the interval grows by 5 s.
			d.lastPoll = now
			d.interval += 5 * time.Second
			f = failSlowDown
		default:
			d.lastPoll = now
			f = failPending
		}
		if f >= 0 {
			detail := ""
			if d != nil {
				detail = strconv.Itoa(int(d.interval / time.Second))
			}
			s.mu.Unlock()
			spec.fail(s, w, r, f, detail)
			return
		}
		d.done = true
		g := s.newGrant(d.scopes, d.offline)
		m := s.issue(g, g.offline)
		s.mu.Unlock()
		spec.success(s, w, r, req, g, m, grantType)
	case "":
		s.mu.Unlock()
		spec.fail(s, w, r, failInvalidRequest, "missing grant_type")
	default:
		s.mu.Unlock()
		spec.fail(s, w, r, failUnsupportedGrant, grantType)
	}
}

// newDevice starts a device authorization.
func (s *Server) newDevice(scopes []string, offline bool, userCode string, lifetime time.Duration, documentedInterval int) (deviceCode string, d *deviceFlow) {
	interval := documentedInterval
	if s.Options.DeviceInterval > 0 {
		interval = s.Options.DeviceInterval
	}
	d = &deviceFlow{userCode: userCode, scopes: scopes, offline: offline, expires: s.now().Add(lifetime), interval: time.Duration(interval) * time.Second}
	deviceCode = randAlnum(40)
	s.devices[deviceCode] = d
	return deviceCode, d
}

// bearerToken finds the live access token a request carries as Bearer (or
// in a "token" or "access_token" parameter).
func (s *Server) bearerAccess(req *request) (*token, string) {
	v := req.bearer
	if v == "" {
		v = req.params.Get("token")
	}
	if v == "" {
		v = req.params.Get("access_token")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tokens[v]
	if t == nil || t.refresh || !s.live(t) {
		return nil, v
	}
	return t, v
}
