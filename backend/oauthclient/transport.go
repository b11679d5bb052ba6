package oauthclient

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// CheckEndpointURL enforces the endpoint URL policy: https, or http only on a
// loopback host; no credentials or fragment in the URL; never a link-local
// address (cloud metadata services live there).
func CheckEndpointURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("not a valid URL: %w", err)
	}
	if u.Host == "" || u.Opaque != "" {
		return errors.New("must be an absolute URL with a host")
	}
	if u.User != nil {
		return errors.New("must not contain credentials")
	}
	if u.Fragment != "" {
		return errors.New("must not contain a fragment")
	}
	host := u.Hostname()
	if addr, err := netip.ParseAddr(host); err == nil && isForbiddenAddr(addr) {
		return fmt.Errorf("host %s is a link-local, multicast or unspecified address", host)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if IsLoopbackHost(host) {
			return nil
		}
		return errors.New("must use https (http is allowed only for loopback hosts)")
	default:
		return fmt.Errorf("scheme %q is not allowed, use https", u.Scheme)
	}
}

// IsLoopbackHost reports whether host is localhost or a loopback address.
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	addr, err := netip.ParseAddr(host)
	return err == nil && addr.Unmap().IsLoopback()
}

func isForbiddenAddr(addr netip.Addr) bool {
	addr = addr.Unmap()
	return addr.IsLinkLocalUnicast() || addr.IsLinkLocalMulticast() ||
		addr.IsInterfaceLocalMulticast() || addr.IsMulticast() || addr.IsUnspecified()
}

// refuseForbiddenAddrs runs after DNS resolution, so a name that resolves to a
// link-local address is refused as well as a literal one.
func refuseForbiddenAddrs(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return err
	}
	if isForbiddenAddr(addr) {
		return fmt.Errorf("refusing to connect to %s: link-local, multicast or unspecified address", addr)
	}
	return nil
}

// errRedirect is returned for any 3xx answer: following a redirect could
// carry credentials to a host the operator never configured.
var errRedirect = errors.New("upstream answered with a redirect; redirects are not followed")

// NewHTTPClient returns the HTTP client every upstream call uses. caPEM, when
// set, replaces the system roots. timeout bounds each whole request.
func NewHTTPClient(caPEM string, timeout time.Duration) (*http.Client, error) {
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if strings.TrimSpace(caPEM) != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(caPEM)) {
			return nil, errors.New("no PEM certificate found")
		}
		tlsConfig.RootCAs = pool
	}
	dialer := &net.Dialer{
		Timeout:   timeout,
		KeepAlive: 30 * time.Second,
		Control:   refuseForbiddenAddrs,
	}
	transport := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		TLSClientConfig:       tlsConfig,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	return &http.Client{
		Transport: transport,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}, nil
}
