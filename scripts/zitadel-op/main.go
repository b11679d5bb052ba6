// Command zitadel-op runs the example OpenID Provider of
// github.com/zitadel/oidc/v3 (example/server/exampleop with the in-memory
// example/server/storage) as a second real authorization server for the
// engine's end-to-end tests (tests/harness/zitadel.go).
//
// It is the example's own main (example/server/main.go) with these changes:
//
//   - it listens on 127.0.0.1:PORT with issuer http://127.0.0.1:PORT/;
//   - it registers one confidential client for Vault (storage.WebClient:
//     client_secret_basic; authorization_code, refresh_token and token
//     exchange) whose redirect URIs come from the command line, and adds
//     the device_code grant type to it, which no example constructor
//     offers (the device authorization endpoint refuses a client without
//     it);
//   - it registers a second confidential client playing a resource server
//     (default id "api"): the example only answers introspection for a
//     token whose audience holds the calling client, so this client is how
//     a test sees that an exchanged token was issued for that audience;
//   - the device UI's confirmation passes the user's login name as the
//     subject (exampleop/device.go, confirmHandler), where every other flow
//     and the user store's lookups use the user id; with scope openid the
//     token endpoint then fails ("user not found"). The subject is mapped to
//     the user id before it is stored;
//   - the storage gives a device-code refresh token no client (its
//     getInfoFromRequest knows only code-flow and refresh requests), so the
//     OP refused every refresh of it with invalid_grant; it is issued as
//     for a code-flow request of the same client, user and scopes;
//   - with -test-endpoints it serves GET /test/refresh-tokens, the refresh
//     tokens the storage issued and whether each is still live, so that a
//     test can see rotation and revocation of the refresh tokens Vault
//     keeps sealed. It exposes secrets: loopback tests only.
//
// Everything else (login UI, device UI, token lifetimes, rotation,
// revocation, exchange rules) is the example's unchanged code.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

func main() {
	port := flag.Int("port", envInt("ZITADEL_OP_PORT", 9998), "port to listen on at 127.0.0.1 (env ZITADEL_OP_PORT)")
	redirects := flag.String("redirect-uris", os.Getenv("ZITADEL_OP_REDIRECT_URIS"), "comma-separated redirect URIs of the Vault client (env ZITADEL_OP_REDIRECT_URIS)")
	clientID := flag.String("client-id", envOr("ZITADEL_OP_CLIENT_ID", "vault"), "client id of the Vault client (env ZITADEL_OP_CLIENT_ID)")
	apiClientID := flag.String("api-client-id", envOr("ZITADEL_OP_API_CLIENT_ID", "api"), "client id of the resource-server client (env ZITADEL_OP_API_CLIENT_ID)")
	testEndpoints := flag.Bool("test-endpoints", os.Getenv("ZITADEL_OP_TEST_ENDPOINTS") != "", "serve GET /test/refresh-tokens (env ZITADEL_OP_TEST_ENDPOINTS)")
	flag.Parse()

	// Secrets come from the environment only, so they never show up in ps.
	clientSecret := os.Getenv("ZITADEL_OP_CLIENT_SECRET")
	apiClientSecret := os.Getenv("ZITADEL_OP_API_CLIENT_SECRET")
	if clientSecret == "" || apiClientSecret == "" {
		fail("ZITADEL_OP_CLIENT_SECRET and ZITADEL_OP_API_CLIENT_SECRET must be set")
	}
	var redirectURIs []string
	for _, u := range strings.Split(*redirects, ",") {
		if u = strings.TrimSpace(u); u != "" {
			redirectURIs = append(redirectURIs, u)
		}
	}
	if len(redirectURIs) == 0 {
		fail("-redirect-uris (or ZITADEL_OP_REDIRECT_URIS) is required")
	}

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	issuer := fmt.Sprintf("http://127.0.0.1:%d/", *port)

	storage.RegisterClients(
		storage.WebClient(*clientID, clientSecret, redirectURIs...),
		// The resource server never runs a browser flow; WebClient wants a
		// redirect URI all the same.
		storage.WebClient(*apiClientID, apiClientSecret, "http://127.0.0.1/unused"),
	)
	// The example's user store: test-user@<issuer host> / verysecure.
	users := storage.NewUserStore(issuer)
	store := &opStorage{
		Storage:      storage.NewStorage(users),
		users:        users,
		deviceClient: *clientID,
	}
	router := exampleop.SetupServer(issuer, store, logger, false)
	if *testEndpoints {
		router.Get("/test/refresh-tokens", store.serveRefreshTokens)
	}

	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(*port)))
	if err != nil {
		fail(err.Error())
	}
	srv := &http.Server{Handler: router, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	logger.Info("zitadel example OP listening", "issuer", issuer, "client_id", *clientID, "api_client_id", *apiClientID,
		"redirect_uris", redirectURIs, "test_endpoints", *testEndpoints)
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		fail(err.Error())
	}
}

// opStorage is the example storage with the changes listed at the top: the
// Vault client may use the device_code grant, the two device-flow fixes,
// and the refresh tokens issued are recorded for /test/refresh-tokens.
// Embedding keeps every interface the example storage implements (token
// exchange, device authorization, client credentials), on which the op
// package turns those grants on.
type opStorage struct {
	*storage.Storage
	users        storage.UserStore
	deviceClient string

	mu     sync.Mutex
	issued []issuedRefreshToken
}

type issuedRefreshToken struct {
	token, source, subject, clientID, replaces string
	scopes                                     []string
	issuedAt                                   time.Time
}

func (s *opStorage) GetClientByClientID(ctx context.Context, clientID string) (op.Client, error) {
	c, err := s.Storage.GetClientByClientID(ctx, clientID)
	if err != nil || clientID != s.deviceClient {
		return c, err
	}
	return deviceGrantClient{c}, nil
}

// CompleteDeviceAuthorization stores the user id, not the login name the
// device UI passes, as the subject of an approved device code.
func (s *opStorage) CompleteDeviceAuthorization(ctx context.Context, userCode, username string) error {
	subject := username
	if u := s.users.GetUserByUsername(username); u != nil {
		subject = u.ID
	}
	return s.Storage.CompleteDeviceAuthorization(ctx, userCode, subject)
}

// deviceGrantClient adds the device_code grant type to a client. It hides
// the example's redirect-URI globs (op.HasRedirectGlobs), which the Vault
// client, registered with exact redirect URIs, does not use.
type deviceGrantClient struct{ op.Client }

func (c deviceGrantClient) GrantTypes() []oidc.GrantType {
	return append(slices.Clone(c.Client.GrantTypes()), oidc.GrantTypeDeviceCode)
}

func (s *opStorage) CreateAccessAndRefreshTokens(ctx context.Context, req op.TokenRequest, current string) (string, string, time.Time, error) {
	source, clientID := "authorization_code", ""
	if r, ok := req.(interface{ GetClientID() string }); ok {
		clientID = r.GetClientID()
	}
	switch r := req.(type) {
	case op.TokenExchangeRequest:
		source = "token_exchange"
	case *op.DeviceAuthorizationState:
		source = "device_code"
		// The storage takes the refresh token's client from the request
		// (getInfoFromRequest), which knows no device state: the token would
		// belong to no client and every refresh of it would fail with
		// invalid_grant. It is issued as for the code flow's request.
		req = &storage.AuthRequest{ApplicationID: r.ClientID, UserID: r.Subject, Scopes: r.Scopes}
	default:
		if current != "" {
			source = "refresh_token"
		}
	}
	accessID, refresh, exp, err := s.Storage.CreateAccessAndRefreshTokens(ctx, req, current)
	if err == nil && refresh != "" {
		s.mu.Lock()
		s.issued = append(s.issued, issuedRefreshToken{
			token: refresh, source: source, subject: req.GetSubject(), clientID: clientID,
			replaces: current, scopes: slices.Clone(req.GetScopes()), issuedAt: time.Now(),
		})
		s.mu.Unlock()
	}
	return accessID, refresh, exp, err
}

// serveRefreshTokens lists every refresh token issued, oldest first. live is
// whether the example storage still accepts it (TokenRequestByRefreshToken,
// what the refresh grant looks it up with).
func (s *opStorage) serveRefreshTokens(w http.ResponseWriter, r *http.Request) {
	type entry struct {
		Token    string    `json:"token"`
		Source   string    `json:"source"`
		Subject  string    `json:"subject"`
		ClientID string    `json:"client_id"`
		Replaces string    `json:"replaces,omitempty"`
		Scopes   []string  `json:"scopes"`
		IssuedAt time.Time `json:"issued_at"`
		Live     bool      `json:"live"`
	}
	s.mu.Lock()
	issued := slices.Clone(s.issued)
	s.mu.Unlock()
	out := make([]entry, 0, len(issued))
	for _, t := range issued {
		_, err := s.Storage.TokenRequestByRefreshToken(r.Context(), t.token)
		out = append(out, entry{t.token, t.source, t.subject, t.clientID, t.replaces, t.scopes, t.issuedAt, err == nil})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func envInt(name string, def int) int {
	if v := os.Getenv(name); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			fail(fmt.Sprintf("%s=%q: %v", name, v, err))
		}
		return n
	}
	return def
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "zitadel-op:", msg)
	os.Exit(2)
}
