package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/tests/harness"
)

// TestBadInputMatrix sends bad input to every path and every field of
// docs/api.md through the real HTTP API of a real Vault (so Vault's own
// type coercion runs first): wrong types, empty required fields, 1 MiB
// values, control characters in values and names, invalid enum values,
// out-of-range numbers and URLs the URL policy refuses. Every case must be
// answered with a 4xx (never a 5xx, never a 2xx) whose error names the
// field (or the path parameter), and a refused request must store nothing:
// a refused create leaves no object, a refused update leaves the object as
// it was. At the end, the Vault server log (which carries the plugin's
// stderr) must hold no panic.
//
// The matrix is one table built from per-field specs; every case runs on
// one Vault and one upstream.
//
// Where Vault itself answers before the engine is called (a path with
// control characters, a malformed JSON body), the same request is sent to
// a Vault-owned path (sys/policies/acl/...); an identical answer there is
// Vault's behaviour, not the engine's, and is reported as a note.
func TestBadInputMatrix(t *testing.T) {
	start := time.Now()
	v := harness.StartVault(t)
	callback := v.Addr + "/v1/oauth/callback"
	up := harness.StartUpstream(t, harness.UpstreamOptions{RedirectURIs: []string{callback}})

	m := &badInputMatrix{t: t, v: v, c: v.Client}
	m.mustOK("POST", "config", nil, map[string]any{"redirect_uri": callback, "upstream_timeout": "5s"})
	m.mustOK("POST", "providers/local", nil, map[string]any{
		"issuer": up.URL, "client_id": up.ClientID, "client_secret": up.ClientSecret,
		"allowed_audiences": "billing",
	})
	// "other": explicit token endpoint only (no authorization or device
	// endpoint).
	tokenURL := up.Endpoint(t, "token_endpoint")
	m.mustOK("POST", "providers/other", nil, map[string]any{"token_url": tokenURL, "client_id": "c", "client_secret": "s"})
	rt, _ := up.Mint(t, up.ClientID, "offline_access api:read api:write", "alice")
	m.mustOK("POST", "grants/g", nil, map[string]any{"provider": "local", "refresh_token": rt, "scopes": "api:read,api:write"})
	m.mustOK("POST", "roles/r", nil, map[string]any{"grant": "g", "scopes": "api:read"})
	m.pemKey = ecPrivateKeyPEM(t)

	// ---- values -----------------------------------------------------------
	const mib = 1 << 20
	huge := strings.Repeat("a", mib)
	hugeURL := "https://example.com/" + huge[:mib-len("https://example.com/")]
	hugeDigits := strings.Repeat("9", mib)
	obj := map[string]any{"a": "b"}
	arr := []any{"a", "b"}
	ctrls := []struct{ label, s string }{{`\x00`, "\x00"}, {`\x1b`, "\x1b[31m"}, {`\r\n`, "\r\n"}}

	// ---- bases: a valid request each case changes one field of ---------------
	provBase := func() map[string]any {
		return map[string]any{"token_url": tokenURL, "client_id": "c", "client_secret": "s"}
	}
	provJWTBase := func() map[string]any {
		return map[string]any{"token_url": tokenURL, "client_id": "c", "client_auth": "private_key_jwt", "client_private_key": m.pemKey}
	}
	grantBase := func() map[string]any {
		return map[string]any{"provider": "local", "refresh_token": "rt-not-real-" + harness.RandomHex(t, 8)}
	}
	// A code grant cannot be valid without a browser; the code is refused
	// upstream (400 naming code), so its other fields are tested against
	// that answer.
	grantCodeBase := func() map[string]any {
		return map[string]any{"provider": "local", "code": "not-a-real-code", "redirect_uri": callback,
			"code_verifier": strings.Repeat("v", 43)}
	}
	roleBase := func() map[string]any { return map[string]any{"grant": "g", "scopes": "api:read"} }
	roleCCBase := func() map[string]any { return map[string]any{"grant_type": "client_credentials", "provider": "local"} }
	roleTXBase := func() map[string]any {
		return map[string]any{"grant_type": "token_exchange", "grant": "g", "audience": "billing"}
	}
	flowBase := func() map[string]any { return map[string]any{"provider": "local"} }
	noBase := func() map[string]any { return map[string]any{} }

	// Positive controls: every base is accepted as it is, so a refusal in
	// the matrix is caused by the one field the case changes.
	for _, c := range []struct {
		coll string
		base func() map[string]any
		path string
	}{
		{"providers", provBase, ""}, {"providers", provJWTBase, ""}, {"grants", grantBase, ""},
		{"roles", roleBase, ""}, {"roles", roleCCBase, ""}, {"roles", roleTXBase, ""},
		{"grants", flowBase, "/authorize"}, {"grants", flowBase, "/device"},
	} {
		name := m.fresh("ctl")
		m.mustOK("POST", c.coll+"/"+name+c.path, nil, c.base())
	}

	// ---- field specs -----------------------------------------------------
	type input struct {
		label string
		v     any
	}
	badURLs := []input{
		{`"not a url"`, "not a url"}, {`"/relative"`, "/relative"}, {`"ftp://example.com/x"`, "ftp://example.com/x"},
		{`"http://example.com/x" (http, not loopback)`, "http://example.com/x"},
		{`"https://169.254.169.254/x" (link-local)`, "https://169.254.169.254/x"},
		{`"https://user:pw@example.com/x"`, "https://user:pw@example.com/x"},
		{`"https://example.com/x#frag"`, "https://example.com/x#frag"},
	}
	type spec struct {
		coll, suffix string // "providers", "/authorize"; coll "" for config
		field        string
		kind         string // str url list kv bool int dur enum ref; none: only extra
		base         func() map[string]any
		existing     func() map[string]any // what an update case creates first; default base
		empty        bool                  // "" must be refused on create
		emptyUpdate  bool                  // "" must be refused on update too
		extra        []input
		want         []string // error must contain one of these (default: the field)
		create       bool     // run as a create of a fresh object
		update       bool     // run as an update of a fresh existing object
		updateOnly   bool
	}
	strIn := func(kind string, ctl string) any {
		if kind == "url" {
			return "https://example.com/a" + ctl + "b"
		}
		return "a" + ctl + "b"
	}
	inputsFor := func(s spec) []input {
		var in []input
		switch s.kind {
		case "str", "url", "enum", "ref":
			in = append(in, input{`{"a":"b"} (object for string)`, obj}, input{`["a","b"] (array for string)`, arr})
			if s.kind == "url" {
				in = append(in, input{"1 MiB URL", hugeURL})
			} else {
				in = append(in, input{"1 MiB string", huge})
			}
			for _, c := range ctrls {
				in = append(in, input{"contains " + c.label, strIn(s.kind, c.s)})
			}
			if s.kind == "url" {
				in = append(in, badURLs...)
			}
		case "list":
			in = append(in, input{`{"a":"b"} (object for list)`, obj}, input{`[{"a":"b"}] (array of objects)`, []any{obj}},
				input{"1 MiB item", huge})
			for _, c := range ctrls {
				if c.label == `\r\n` {
					continue // whitespace splits list items (docs/api.md, Conventions)
				}
				in = append(in, input{"item contains " + c.label, "a" + c.s + "b"})
			}
		case "kv":
			in = append(in, input{`"novalue" (no =)`, "novalue"}, input{`{"a":{"b":"c"}} (nested object)`, map[string]any{"a": obj}},
				input{"1 MiB value", map[string]any{"k": huge}}, input{"1 MiB key", map[string]any{huge: "v"}})
			for _, c := range ctrls {
				in = append(in, input{"key contains " + c.label, map[string]any{"k" + c.s + "x": "v"}},
					input{"value contains " + c.label, map[string]any{"k": "v" + c.s + "x"}})
			}
		case "bool":
			in = append(in, input{`"abc" (string for bool)`, "abc"}, input{`{"a":"b"} (object for bool)`, obj},
				input{`["a","b"] (array for bool)`, arr}, input{"1 MiB string for bool", huge})
		case "int":
			in = append(in, input{`"abc" (string for int)`, "abc"}, input{`"1.5" (fraction for int)`, "1.5"},
				input{`{"a":"b"} (object for int)`, obj}, input{`["a","b"] (array for int)`, arr},
				input{`"99999999999999999999" (overflow)`, "99999999999999999999"}, input{"1 MiB of digits", hugeDigits})
		case "dur":
			in = append(in, input{`"abc" (string for duration)`, "abc"}, input{`"1h-" (malformed duration)`, "1h-"},
				input{`{"a":"b"} (object for duration)`, obj}, input{`["a","b"] (array for duration)`, arr},
				input{`"-1" (negative)`, "-1"}, input{`"-5m" (negative)`, "-5m"}, input{"1 MiB of digits", hugeDigits})
		}
		return append(in, s.extra...)
	}

	var specs []spec
	add := func(s spec) { specs = append(specs, s) }

	// config: one object, updated in place.
	for _, s := range []spec{
		{field: "redirect_uri", kind: "url"},
		{field: "refresh_skew", kind: "dur"},
		{field: "tidy_interval", kind: "dur", extra: []input{{`"0" (below 1s)`, "0"}}},
		{field: "upstream_timeout", kind: "dur", extra: []input{{`"0" (below 1s)`, "0"}}},
		{field: "max_pending_authorizations", kind: "int", extra: []input{{`"0" (below 1)`, "0"}, {`"-1"`, "-1"}}},
	} {
		s.base, s.update = noBase, true
		add(s)
	}

	// providers/:name
	for _, f := range []string{"issuer", "token_url", "authorization_url", "revocation_url", "introspection_url", "device_authorization_url"} {
		s := spec{coll: "providers", field: f, kind: "url", base: provBase, create: true, update: true}
		if f == "issuer" {
			s.extra = []input{{`"http://127.0.0.1:1" (nothing listening: discovery fails)`, "http://127.0.0.1:1"}}
		}
		if f == "token_url" {
			s.empty, s.emptyUpdate = true, true
		}
		add(s)
	}
	add(spec{coll: "providers", field: "client_id", kind: "str", base: provBase, empty: true, emptyUpdate: true, create: true, update: true})
	add(spec{coll: "providers", field: "client_secret", kind: "str", base: provBase, empty: true, emptyUpdate: true, create: true, update: true})
	add(spec{coll: "providers", field: "client_auth", kind: "enum", base: provBase, create: true, update: true,
		extra: []input{{`"bogus"`, "bogus"}, {`""`, ""}, {`"client_secret_jwt" (not supported)`, "client_secret_jwt"}}})
	add(spec{coll: "providers", field: "client_private_key", kind: "str", base: provJWTBase, empty: true, emptyUpdate: true, create: true, update: true,
		extra: []input{{`"not a pem"`, "not a pem"},
			{"PEM block of garbage", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}}})
	add(spec{coll: "providers", field: "client_key_id", kind: "str", base: provJWTBase, create: true, update: true})
	add(spec{coll: "providers", field: "scopes", kind: "list", base: provBase, create: true, update: true})
	add(spec{coll: "providers", field: "token_params", kind: "kv", base: provBase, create: true, update: true,
		extra: []input{{`{"grant_type":"x"} (reserved)`, map[string]any{"grant_type": "x"}},
			{`{"client_secret":"x"} (reserved)`, map[string]any{"client_secret": "x"}}}})
	add(spec{coll: "providers", field: "revocation_cascades", kind: "bool", base: provBase, create: true, update: true})
	add(spec{coll: "providers", field: "ca_pem", kind: "str", base: provBase, create: true, update: true,
		extra: []input{{`"not a pem"`, "not a pem"},
			{"PEM block of garbage", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}}})
	add(spec{coll: "providers", field: "timeout", kind: "dur", base: provBase, create: true, update: true})
	add(spec{coll: "providers", field: "response_mode", kind: "enum", base: provBase, create: true, update: true,
		extra: []input{{`"bogus"`, "bogus"}, {`""`, ""}, {`"fragment" (not supported)`, "fragment"}}})
	add(spec{coll: "providers", field: "allowed_audiences", kind: "list", base: provBase, create: true, update: true})
	add(spec{coll: "providers", field: "rebind_grants", kind: "bool", base: provBase, update: true, updateOnly: true})
	add(spec{coll: "providers", field: "preset", kind: "enum", base: provBase, create: true, update: true,
		extra: []input{{`"okta" (no such preset)`, "okta"}, {`""`, ""}}})
	add(spec{coll: "providers", field: "tenant", kind: "str", base: provBase, create: true, update: true,
		extra: []input{{`"contoso" (no preset with a tenant)`, "contoso"}}})
	add(spec{coll: "providers", field: "revocation_style", kind: "enum", base: provBase, create: true, update: true,
		extra: []input{{`"bogus"`, "bogus"}, {`""`, ""}}})
	add(spec{coll: "providers", field: "auth_params", kind: "kv", base: provBase, create: true, update: true,
		extra: []input{{`{"state":"x"} (reserved)`, map[string]any{"state": "x"}},
			{`{"redirect_uri":"x"} (reserved)`, map[string]any{"redirect_uri": "https://evil.example.com/cb"}}}})
	add(spec{coll: "providers", field: "default_token_ttl", kind: "dur", base: provBase, create: true, update: true})
	add(spec{coll: "providers", field: "response_fields", kind: "list", base: provBase, create: true, update: true,
		extra: []input{{`"refresh_token" (a credential)`, "refresh_token"}, {`"authed_user.access_token" (a credential)`, "authed_user.access_token"},
			{`"access_token" (a creds field)`, "access_token"}}})
	add(spec{coll: "providers", field: "scope_delimiter", kind: "enum", base: provBase, create: true, update: true,
		extra: []input{{`"semicolon"`, "semicolon"}, {`""`, ""}}})
	add(spec{coll: "providers", field: "token_request_format", kind: "enum", base: provBase, create: true, update: true,
		extra: []input{{`"xml"`, "xml"}, {`""`, ""}}})
	add(spec{coll: "providers", field: "invalid_grant_errors", kind: "list", base: provBase, create: true, update: true,
		extra: []input{{`"bad/code"`, "bad/code"}}})

	// grants/:name
	add(spec{coll: "grants", field: "provider", kind: "ref", base: grantBase, empty: true, create: true, update: true,
		extra: []input{{`"nosuch" (no such provider)`, "nosuch"}}})
	add(spec{coll: "grants", field: "refresh_token", kind: "str", base: grantBase, empty: true, create: true, update: true})
	add(spec{coll: "grants", field: "code", kind: "str", base: grantCodeBase, existing: grantBase, create: true, update: true,
		extra: []input{{`"not-a-real-code" (refused upstream)`, "not-a-real-code-2"}}})
	add(spec{coll: "grants", field: "redirect_uri", kind: "str", base: grantCodeBase, existing: grantBase, empty: true, emptyUpdate: true, create: true, update: true})
	add(spec{coll: "grants", field: "code_verifier", kind: "str", base: grantCodeBase, existing: grantBase, create: true, update: true,
		extra: []input{{`"short" (RFC 7636 needs 43-128 chars)`, "short"}}})
	add(spec{coll: "grants", field: "scopes", kind: "list", base: grantBase, create: true, update: true})
	for _, f := range []string{"max_age", "idle_timeout", "keep_alive"} {
		add(spec{coll: "grants", field: f, kind: "dur", base: grantBase, create: true, update: true})
	}
	add(spec{coll: "grants", field: "owner_entity_id", kind: "str", base: grantBase, create: true, update: true,
		extra: []input{{`"nosuch-entity"`, "nosuch-entity"}}})
	add(spec{coll: "grants", field: "change_owner", kind: "bool", base: grantBase, update: true, updateOnly: true})
	// On update the provider cannot change.
	add(spec{coll: "grants", field: "provider", kind: "none", base: grantBase, update: true, updateOnly: true,
		extra: []input{{`"other" (another provider)`, "other"}}})

	// grants/:name/authorize and /device: a new grant each (create), and
	// a fresh active grant (update: nothing may change).
	for _, sfx := range []string{"/authorize", "/device"} {
		noEndpoint := "authorization_url"
		if sfx == "/device" {
			noEndpoint = "device_authorization_url"
		}
		add(spec{coll: "grants", suffix: sfx, field: "provider", kind: "ref", base: flowBase, empty: true, create: true,
			extra: []input{{`"nosuch" (no such provider)`, "nosuch"},
				{`"other" (provider without ` + noEndpoint + `)`, "other"}}})
		add(spec{coll: "grants", suffix: sfx, field: "provider", kind: "none", base: flowBase, update: true, updateOnly: true,
			extra: []input{{`"other" (not the grant's provider)`, "other"}}})
		add(spec{coll: "grants", suffix: sfx, field: "scopes", kind: "list", base: flowBase, create: true, update: true})
		for _, f := range []string{"max_age", "idle_timeout", "keep_alive"} {
			add(spec{coll: "grants", suffix: sfx, field: f, kind: "dur", base: flowBase, create: true, update: true})
		}
		add(spec{coll: "grants", suffix: sfx, field: "owner_entity_id", kind: "str", base: flowBase, create: true, update: true,
			extra: []input{{`"nosuch-entity"`, "nosuch-entity"}}})
	}

	// roles/:name
	add(spec{coll: "roles", field: "grant_type", kind: "enum", base: roleBase, create: true, update: true,
		extra: []input{{`"bogus"`, "bogus"}, {`""`, ""}, {`"authorization_code" (not a role type)`, "authorization_code"},
			{`"password" (not a role type)`, "password"}}})
	add(spec{coll: "roles", field: "grant", kind: "ref", base: roleBase, empty: true, emptyUpdate: true, create: true, update: true,
		extra: []input{{`"nosuch" (no such grant)`, "nosuch"}}})
	add(spec{coll: "roles", field: "provider", kind: "ref", base: roleCCBase, empty: true, emptyUpdate: true, create: true, update: true,
		extra: []input{{`"nosuch" (no such provider)`, "nosuch"}}})
	add(spec{coll: "roles", field: "provider", kind: "none", base: roleBase, create: true, update: true,
		extra: []input{{`"local" (on a refresh_token role)`, "local"}}})
	add(spec{coll: "roles", field: "grant", kind: "none", base: roleCCBase, create: true, update: true,
		extra: []input{{`"g" (on a client_credentials role)`, "g"}}})
	add(spec{coll: "roles", field: "scopes", kind: "list", base: roleBase, create: true, update: true,
		extra: []input{{`"api:admin" (not among the grant's scopes)`, "api:admin"}}})
	add(spec{coll: "roles", field: "audience", kind: "list", base: roleTXBase, create: true, update: true,
		extra: []input{{`"elsewhere" (not in allowed_audiences)`, "elsewhere"}}})
	add(spec{coll: "roles", field: "resource", kind: "list", base: roleBase, create: true, update: true,
		extra: []input{{`"not-a-uri"`, "not-a-uri"}, {`"https://example.com/x#frag"`, "https://example.com/x#frag"},
			{`"/relative"`, "/relative"}}})
	for _, f := range []string{"strict_scopes", "token_reuse", "verify_on_renew"} {
		add(spec{coll: "roles", field: f, kind: "bool", base: roleBase, create: true, update: true})
	}
	for _, f := range []string{"ttl", "max_ttl", "min_remaining"} {
		add(spec{coll: "roles", field: f, kind: "dur", base: roleBase, create: true, update: true})
	}
	add(spec{coll: "roles", field: "ttl", kind: "none", create: true, update: true,
		base:  func() map[string]any { b := roleBase(); b["max_ttl"] = "1m"; return b },
		extra: []input{{`"1h" with max_ttl=1m`, "1h"}}})

	// ---- cases -----------------------------------------------------------
	var cases []*biCase
	for _, s := range specs {
		ins := inputsFor(s)
		for _, mode := range []string{"create", "update"} {
			if (mode == "create" && (!s.create || s.updateOnly)) || (mode == "update" && !s.update) {
				continue
			}
			list := ins
			if (mode == "create" && s.empty) || (mode == "update" && s.emptyUpdate) {
				list = append([]input{{`"" (required)`, ""}}, list...)
			}
			for _, in := range list {
				c := &biCase{method: "POST", field: s.field, input: in.label, mode: mode, want: s.want}
				body := s.base()
				body[s.field] = in.v
				c.body = body
				if s.coll == "" { // config
					c.path = "config"
					c.prepare = func(c *biCase) { c.snapshot = m.readData("config") }
					c.check = func(c *biCase) string {
						after := m.readData("config")
						if d := diff(c.snapshot, after); d != "" {
							m.restoreConfig(c.snapshot)
							return "config changed: " + d
						}
						return ""
					}
					cases = append(cases, c)
					continue
				}
				if mode == "create" {
					name := m.fresh(s.coll[:1])
					c.path = s.coll + "/" + name + s.suffix
					c.check = func(*biCase) string { return m.absent(s.coll, name) }
				} else {
					c.prepare = func(c *biCase) {
						// A fresh existing object each time (for the flows, an
						// active grant: a refused flow must leave it as it was).
						name := m.fresh(s.coll[:1] + "u")
						switch {
						case s.suffix != "":
							m.mustOK("POST", s.coll+"/"+name, nil, grantBase())
						case s.existing != nil:
							m.mustOK("POST", s.coll+"/"+name, nil, s.existing())
						default:
							m.mustOK("POST", s.coll+"/"+name, nil, s.base())
						}
						c.path = s.coll + "/" + name + s.suffix
						c.object = s.coll + "/" + name
						c.snapshot = m.readData(c.object)
					}
					c.check = func(c *biCase) string {
						if d := diff(c.snapshot, m.readData(c.object)); d != "" {
							return c.object + " changed: " + d
						}
						return ""
					}
				}
				cases = append(cases, c)
			}
		}
	}

	// Deletes with a wrongly typed option: refused, nothing deleted.
	for _, coll := range []string{"providers", "grants"} {
		base := provBase
		if coll == "grants" {
			base = grantBase
		}
		for _, in := range []input{{`"abc" (string for bool)`, "abc"}, {"1 MiB string for bool", huge}} {
			c := &biCase{method: "DELETE", field: "force", input: in.label, mode: "delete", query: url.Values{"force": {in.v.(string)}}}
			c.prepare = func(c *biCase) {
				name := m.fresh(coll[:1] + "d")
				m.mustOK("POST", coll+"/"+name, nil, base())
				c.path, c.object = coll+"/"+name, coll+"/"+name
				c.snapshot = m.readData(c.object)
			}
			c.check = func(c *biCase) string {
				if d := diff(c.snapshot, m.readData(c.object)); d != "" {
					return c.object + " changed or deleted: " + d
				}
				return ""
			}
			cases = append(cases, c)
		}
	}

	// Names (the path parameter): control characters, and a long name.
	// Not 1 MiB: Vault's own request path handling is quadratic in the
	// path's length (a 64 KiB path takes ~2.3 s on any mount, sys/ too),
	// so a 1 MiB name would keep Vault busy for minutes before any engine
	// saw it. 8 KiB is what a name this engine stores may reasonably be
	// refused at.
	names := []input{{`name contains \x00`, "bi\x00x"}, {`name contains \x1b`, "bi\x1b[31mx"}, {`name contains \r\n`, "bi\r\nx"},
		{"8 KiB name", "n" + strings.Repeat("a", 8<<10-1)}}
	for _, target := range []struct {
		coll, suffix string
		body         func() map[string]any
		method       string
	}{
		{"providers", "", provBase, "POST"}, {"grants", "", grantBase, "POST"}, {"roles", "", roleBase, "POST"},
		{"grants", "/authorize", flowBase, "POST"}, {"grants", "/device", flowBase, "POST"},
		{"providers", "", nil, "DELETE"}, {"grants", "", nil, "DELETE"}, {"roles", "", nil, "DELETE"},
		{"creds", "", nil, "GET"},
	} {
		for _, in := range names {
			name := in.v.(string)
			if target.method == "DELETE" && !strings.ContainsAny(name, "\x00\x1b\r") {
				continue // deleting what does not exist succeeds (docs/api.md)
			}
			want := []string{"name", "path"}
			if target.coll == "creds" {
				want = append(want, "role")
			}
			c := &biCase{method: target.method, field: "name", input: in.label, mode: "name",
				path: target.coll + "/" + name + target.suffix, want: want,
				corePath: "sys/policies/acl/" + name}
			if target.body != nil {
				c.body = target.body()
			}
			listColl := target.coll
			if listColl == "creds" {
				listColl = "roles"
			}
			c.prepare = func(c *biCase) { c.list = m.list(listColl) }
			c.check = func(c *biCase) string {
				if after := m.list(listColl); !reflect.DeepEqual(c.list, after) {
					added := []string{}
					for _, k := range after {
						if !contains(c.list, k) {
							added = append(added, short(k))
							q := url.Values(nil)
							if listColl == "grants" {
								q = url.Values{"force": {"true"}}
							}
							m.call("DELETE", listColl+"/"+k, q, nil)
						}
					}
					return fmt.Sprintf("LIST %s gained %v", listColl, added)
				}
				return ""
			}
			cases = append(cases, c)
		}
	}

	// creds/:name: an unknown role; a write.
	cases = append(cases,
		&biCase{method: "GET", path: "creds/nosuch", field: "name", input: `"nosuch" (no such role)`, mode: "read", want: []string{"role", "nosuch"}},
		&biCase{method: "POST", path: "creds/r", input: "write to a read-only path", mode: "op", body: map[string]any{"ttl": "1h"}},
		&biCase{method: "GET", path: "metrics", field: "format", input: `"xml"`, mode: "read", query: url.Values{"format": {"xml"}}},
		&biCase{method: "GET", path: "metrics", field: "format", input: "contains \\x1b", mode: "read", query: url.Values{"format": {"a\x1bb"}}},
	)
	// keys/rotate and tidy take no fields: malformed bodies, wrong method.
	// config takes fields: the same bodies.
	for _, p := range []string{"keys/rotate", "tidy", "config"} {
		cases = append(cases,
			&biCase{method: "POST", path: p, input: "malformed JSON body (unclosed)", mode: "op", raw: []byte(`{"force": tru`), corePath: "sys/policies/acl/bi-x"},
			&biCase{method: "POST", path: p, input: "malformed JSON body (trailing comma)", mode: "op", raw: []byte(`{"a": 1,}`), corePath: "sys/policies/acl/bi-x"},
			&biCase{method: "POST", path: p, input: "JSON array body", mode: "op", raw: []byte(`[1,2,3]`), corePath: "sys/policies/acl/bi-x"},
			&biCase{method: "POST", path: p, input: "JSON string body", mode: "op", raw: []byte(`"x"`), corePath: "sys/policies/acl/bi-x"},
		)
	}
	for _, p := range []string{"keys/rotate", "tidy"} {
		cases = append(cases, &biCase{method: "GET", path: p, input: "read of a write-only path", mode: "op"})
	}

	// callback: the unauthenticated path takes its fields from the query
	// (GET, response_mode=query) or the body (POST, form_post). Wrong
	// types can only be sent as JSON bodies.
	cbState := func(c *biCase) {
		// A real pending authorization of a new grant, so that the fields
		// after state are what gets checked.
		name := m.fresh("cb")
		s := m.mustOK("POST", "grants/"+name+"/authorize", nil, map[string]any{"provider": "local"})
		c.state, _ = s.data["state"].(string)
		c.object = "grants/" + name
	}
	notActive := func(c *biCase) string {
		if g := m.readData(c.object); g != nil && g["status"] == "active" {
			return c.object + " became active"
		}
		return ""
	}
	cbStrings := func() []input {
		in := []input{{"1 MiB string", huge}}
		for _, c := range ctrls {
			in = append(in, input{"contains " + c.label, "a" + c.s + "b"})
		}
		return in
	}
	cbTypes := []input{{`{"a":"b"} (object for string)`, obj}, {`["a","b"] (array for string)`, arr}}
	for _, f := range []struct {
		field string
		real  bool // needs a real pending state
		strs  []input
		want  []string
	}{
		{field: "state", strs: append([]input{{`"" (required)`, ""}}, cbStrings()...)},
		{field: "code", real: true, strs: append([]input{{`"" (required)`, ""}}, cbStrings()...)},
		{field: "iss", real: true, strs: append([]input{{`"https://evil.example" (another issuer)`, "https://evil.example"}}, cbStrings()...)},
		// error is the provider's refusal: the answer says it refused.
		{field: "error", real: true, strs: cbStrings(), want: []string{"refused", `"error"`, "error:"}},
		// error_description is documented as unused: only its type is checked.
		{field: "error_description", real: true},
	} {
		build := func(in input, method string) *biCase {
			c := &biCase{method: method, path: "callback", field: f.field, input: in.label, mode: "callback", want: f.want}
			// The provider's discovery says it always sends iss (RFC 9207).
			params := map[string]any{"state": "no-such-state-" + harness.RandomHex(t, 8), "code": "not-a-real-code", "iss": up.URL}
			if f.field == "error" || f.field == "error_description" {
				delete(params, "code")
				params["error"] = "access_denied"
			}
			c.prepare = func(c *biCase) {
				if f.real {
					cbState(c)
					params["state"] = c.state
				}
				params[f.field] = in.v
				if method == "GET" {
					q := url.Values{}
					for k, v := range params {
						q.Set(k, v.(string))
					}
					c.query = q
				} else {
					c.body = params
				}
			}
			if f.real {
				c.check = notActive
			}
			return c
		}
		for _, in := range f.strs {
			cases = append(cases, build(in, "GET"))
		}
		for _, in := range cbTypes {
			cases = append(cases, build(in, "POST"))
		}
	}

	// ---- run -------------------------------------------------------------
	statuses := map[int]int{}
	var failures, notes, coreNotes []string
	type timing struct {
		d     time.Duration
		label string
	}
	var slow []timing
	for i, c := range cases {
		if c.prepare != nil {
			c.prepare(c)
		}
		t0 := time.Now()
		res := m.call(c.method, c.path, c.query, c.requestBody())
		slow = append(slow, timing{time.Since(t0), c.label()})
		statuses[res.status]++
		// Vault's own answer to the same request at a Vault-owned path.
		core := ""
		if c.corePath != "" && res.transport == nil {
			other := m.call(c.method, c.corePath, c.query, c.requestBody())
			if other.transport == nil && other.status == res.status && other.errText == res.errText {
				core = fmt.Sprintf("%d %s", other.status, short(other.errText))
			}
		}
		var problems []string
		switch {
		case res.transport != nil:
			problems = append(problems, "transport error: "+res.transport.Error())
		case res.status >= 500 && core == "":
			problems = append(problems, fmt.Sprintf("status %d (server error)", res.status))
		case res.status < 400:
			problems = append(problems, fmt.Sprintf("status %d (accepted)", res.status))
		}
		if res.transport == nil && res.status > 400 && res.status < 500 {
			notes = append(notes, fmt.Sprintf("%s: %d %s", c.label(), res.status, short(res.errText)))
		}
		if res.transport == nil && c.field != "" && core == "" && !c.errorNames(res.errText) {
			problems = append(problems, fmt.Sprintf("error does not name %s", strings.Join(c.wanted(), " or ")))
		}
		if core != "" {
			coreNotes = append(coreNotes, fmt.Sprintf("%s -> %s (the same at %s)", c.label(), core, short(c.corePath)))
		}
		if c.check != nil {
			if stored := c.check(c); stored != "" {
				problems = append(problems, "stored: "+stored)
			}
		}
		if len(problems) > 0 {
			line := fmt.Sprintf("#%d %s -> %d %s: %s", i, c.label(), res.status, short(res.errText), strings.Join(problems, "; "))
			failures = append(failures, line)
			t.Error(line)
		}
	}

	// ---- the log: no panic anywhere ------------------------------------------
	logData, err := os.ReadFile(v.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	for n, line := range strings.Split(string(logData), "\n") {
		if strings.Contains(strings.ToLower(line), "panic") || strings.Contains(line, "goroutine ") {
			t.Errorf("vault server log line %d: %s", n+1, short(line))
		}
	}

	var codes []string
	for _, s := range sortedKeys(statuses) {
		codes = append(codes, fmt.Sprintf("%d×%d", s, statuses[s]))
	}
	sort.Slice(slow, func(i, j int) bool { return slow[i].d > slow[j].d })
	var slowest []string
	for _, s := range slow[:min(5, len(slow))] {
		slowest = append(slowest, fmt.Sprintf("%s %s", s.d.Round(time.Millisecond), s.label))
	}
	t.Logf("bad-input matrix: %d cases, statuses %s, %d failing; took %s; slowest:\n  %s", len(cases), strings.Join(codes, " "),
		len(failures), time.Since(start).Round(time.Millisecond), strings.Join(slowest, "\n  "))
	if len(notes) > 0 {
		t.Logf("4xx other than 400 (accepted, noted):\n  %s", strings.Join(notes, "\n  "))
	}
	if len(coreNotes) > 0 {
		t.Logf("answered by Vault itself before the engine (identical answer at a Vault-owned path; not the engine's):\n  %s",
			strings.Join(coreNotes, "\n  "))
	}
	if len(failures) > 0 {
		t.Logf("failing cases:\n  %s", strings.Join(failures, "\n  "))
	}
}

// biCase is one row of the bad-input matrix.
type biCase struct {
	method, path string
	field        string // the field under test; "name" for the path parameter; "" when the path has none
	input        string // what was sent, for the report
	mode         string // create, update, delete, name, read, op, callback
	body         map[string]any
	raw          []byte
	query        url.Values
	want         []string // the error must contain one of these; default: field
	// corePath: a Vault-owned path the same request is also sent to; an
	// identical answer there means Vault answered before the engine.
	corePath string

	prepare  func(*biCase)
	check    func(*biCase) string // "" when nothing was stored or changed
	object   string               // the object an update targets
	snapshot map[string]any
	list     []string
	state    string
}

func (c *biCase) requestBody() []byte {
	if c.raw != nil {
		return c.raw
	}
	if c.body == nil {
		return nil
	}
	b, err := json.Marshal(c.body)
	if err != nil {
		panic(err)
	}
	return b
}

func (c *biCase) wanted() []string {
	if len(c.want) > 0 {
		return c.want
	}
	return []string{c.field}
}

func (c *biCase) errorNames(errText string) bool {
	for _, w := range c.wanted() {
		if strings.Contains(errText, w) {
			return true
		}
	}
	return false
}

func (c *biCase) label() string {
	f := c.field
	if f == "" {
		f = "-"
	}
	return fmt.Sprintf("%s %s [%s] field=%s input=%s", c.method, short(c.path), c.mode, f, c.input)
}

// short quotes s with long runs of one byte squeezed ("aaaaaaaa…×1048576"),
// cut to 240 bytes.
func short(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		j := i
		for j < len(s) && s[j] == s[i] {
			j++
		}
		if j-i > 16 {
			b.WriteString(s[i : i+8])
			fmt.Fprintf(&b, "…×%d", j-i)
		} else {
			b.WriteString(s[i:j])
		}
		i = j
	}
	q := fmt.Sprintf("%q", b.String())
	if len(q) > 240 {
		return fmt.Sprintf("%s...(%d bytes)", q[:240], len(s))
	}
	return q
}

func sortedKeys(m map[int]int) []int {
	var k []int
	for s := range m {
		k = append(k, s)
	}
	sort.Ints(k)
	return k
}

// diff describes how two reads differ ("" when equal).
func diff(before, after map[string]any) string {
	if reflect.DeepEqual(before, after) {
		return ""
	}
	if before == nil || after == nil {
		return fmt.Sprintf("%s -> %s", presence(before), presence(after))
	}
	keys := map[string]bool{}
	for k := range before {
		keys[k] = true
	}
	for k := range after {
		keys[k] = true
	}
	var sorted []string
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	var out []string
	for _, k := range sorted {
		if !reflect.DeepEqual(before[k], after[k]) {
			out = append(out, fmt.Sprintf("%s %s -> %s", k, short(fmt.Sprint(before[k])), short(fmt.Sprint(after[k]))))
		}
	}
	return strings.Join(out, ", ")
}

func presence(m map[string]any) string {
	if m == nil {
		return "absent"
	}
	return "present"
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// badInputMatrix sends the requests.
type badInputMatrix struct {
	t      *testing.T
	v      *harness.Vault
	c      *api.Client
	n      int
	pemKey string
}

type biResult struct {
	status    int
	errText   string
	data      map[string]any
	transport error
}

func (m *badInputMatrix) fresh(prefix string) string {
	m.n++
	return fmt.Sprintf("bi-%s-%d", prefix, m.n)
}

// call sends one request through the api client and decodes Vault's
// answer. path is relative to the mount, or starts with "sys/".
func (m *badInputMatrix) call(method, path string, query url.Values, body []byte) biResult {
	full := "/v1/oauth/" + path
	if strings.HasPrefix(path, "sys/") {
		full = "/v1/" + path
	}
	// Path escaping, as the api client does: control characters in a name
	// travel percent-encoded.
	u, err := url.Parse(m.v.Addr)
	if err != nil {
		return biResult{transport: err}
	}
	u.Path = full
	if query != nil {
		u.RawQuery = query.Encode()
	}
	target := u.String()
	var reqBody io.Reader
	if body != nil {
		reqBody = bytes.NewReader(body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, target, reqBody)
	if err != nil {
		return biResult{transport: err}
	}
	req.Header.Set("X-Vault-Token", m.c.Token())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return biResult{transport: err}
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var doc struct {
		Errors []string       `json:"errors"`
		Data   map[string]any `json:"data"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	_ = dec.Decode(&doc)
	res := biResult{status: resp.StatusCode, data: doc.Data, errText: strings.Join(doc.Errors, "; ")}
	if res.status >= 400 && len(doc.Errors) == 0 {
		res.errText = string(raw)
	}
	return res
}

func (m *badInputMatrix) mustOK(method, path string, query url.Values, body map[string]any) biResult {
	m.t.Helper()
	b, _ := json.Marshal(body)
	res := m.call(method, path, query, b)
	if res.transport != nil || res.status >= 300 {
		m.t.Fatalf("%s oauth/%s: %d %v %s", method, path, res.status, res.transport, short(res.errText))
	}
	return res
}

// readData reads oauth/path; nil when it does not exist.
func (m *badInputMatrix) readData(path string) map[string]any {
	m.t.Helper()
	res := m.call("GET", path, nil, nil)
	switch {
	case res.transport != nil:
		m.t.Fatalf("read oauth/%s: %v", path, res.transport)
	case res.status == http.StatusNotFound:
		return nil
	case res.status != http.StatusOK:
		m.t.Fatalf("read oauth/%s: %d %s", path, res.status, short(res.errText))
	}
	return res.data
}

// absent checks that a refused create left nothing at coll/name, and
// removes what it finds so later cases start clean.
func (m *badInputMatrix) absent(coll, name string) string {
	m.t.Helper()
	got := m.readData(coll + "/" + name)
	if got == nil {
		if contains(m.list(coll), name) {
			return fmt.Sprintf("%s listed in LIST %s although it cannot be read", name, coll)
		}
		return ""
	}
	q := url.Values(nil)
	if coll == "grants" {
		q = url.Values{"force": {"true"}}
	}
	m.call("DELETE", coll+"/"+name, q, nil)
	summary := map[string]any{}
	for k, v := range got {
		if s := fmt.Sprint(v); s != "" && s != "[]" && s != "false" && s != "0" && s != "<nil>" && s != "map[]" {
			summary[k] = v
		}
	}
	return fmt.Sprintf("%s/%s was created: %s", coll, name, short(fmt.Sprint(summary)))
}

// list returns LIST oauth/coll (nil when empty).
func (m *badInputMatrix) list(coll string) []string {
	m.t.Helper()
	res := m.call("LIST", coll, nil, nil)
	if res.transport != nil || (res.status != http.StatusOK && res.status != http.StatusNotFound) {
		m.t.Fatalf("LIST oauth/%s: %d %v", coll, res.status, res.transport)
	}
	var keys []string
	if ks, ok := res.data["keys"].([]any); ok {
		for _, k := range ks {
			keys = append(keys, fmt.Sprint(k))
		}
	}
	return keys
}

// restoreConfig writes back a config a bad write changed, so later cases
// run against the original settings.
func (m *badInputMatrix) restoreConfig(snapshot map[string]any) {
	m.t.Helper()
	m.mustOK("POST", "config", nil, snapshot)
}

func ecPrivateKeyPEM(t *testing.T) string {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}
