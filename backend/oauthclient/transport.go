package oauthclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"syscall"
	"time"
)

// CheckEndpointURL enforces the endpoint URL policy: https, or http only on a
// loopback host; no credentials or fragment in the URL; never a forbidden
// address (see isForbiddenAddr: link-local, where cloud metadata services
// live, the other metadata addresses, and IPv6 forms embedding them), nor a
// numeric host in a non-canonical IPv4 spelling ("0xa9fea9fe", "2852039166",
// "169.254.169.254.") that resolvers would read as an address.
func CheckEndpointURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("not a valid URL: %w", err)
	}
	// Host ":443" has an empty host name.
	if u.Hostname() == "" || u.Opaque != "" {
		return errors.New("must be an absolute URL with a host")
	}
	if u.User != nil {
		return errors.New("must not contain credentials")
	}
	// An empty fragment ("...#") is a fragment too.
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return errors.New("must not contain a fragment")
	}
	host := u.Hostname()
	if err := checkHost(host); err != nil {
		return err
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

// checkHost applies the address rules to a URL host without resolving it.
func checkHost(host string) error {
	if addr, err := netip.ParseAddr(host); err == nil {
		if isForbiddenAddr(addr) {
			return fmt.Errorf("host %s is a link-local, metadata, multicast or unspecified address", host)
		}
		return nil
	}
	if endsInNumber(host) {
		return fmt.Errorf("host %q is a numeric address in a non-canonical form; write it as a plain IP address", host)
	}
	return nil
}

// endsInNumber reports whether host's last label is a number (decimal, or
// hex with 0x). URL parsers (WHATWG) and inet_aton then read the whole host
// as an IPv4 address, in forms netip does not accept.
func endsInNumber(host string) bool {
	h := strings.TrimSuffix(host, ".")
	last := h[strings.LastIndexByte(h, '.')+1:]
	if last == "" {
		return false
	}
	digits := last
	if len(last) >= 2 && last[0] == '0' && (last[1] == 'x' || last[1] == 'X') {
		digits = last[2:]
		for i := 0; i < len(digits); i++ {
			if !strings.ContainsRune("0123456789abcdefABCDEF", rune(digits[i])) {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return false
		}
	}
	return true
}

// IsLoopbackHost reports whether host is localhost or a loopback address.
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	addr, err := netip.ParseAddr(host)
	return err == nil && addr.Unmap().IsLoopback()
}

var (
	// Cloud metadata services outside the link-local range: AWS IMDS over
	// IPv6 and Alibaba Cloud. (169.254.169.254 is link-local.)
	metadataAddrs = []netip.Addr{
		netip.MustParseAddr("fd00:ec2::254"),
		netip.MustParseAddr("100.100.100.200"),
	}
	// 0.0.0.0/8 reaches the local host on Linux, like 0.0.0.0.
	thisNetwork = netip.MustParsePrefix("0.0.0.0/8")
	// IPv6 forms that carry an IPv4 address the stack or a gateway reaches.
	nat64Prefix      = netip.MustParsePrefix("64:ff9b::/96")    // RFC 6052
	v4CompatPrefix   = netip.MustParsePrefix("::/96")           // RFC 4291 (deprecated)
	v4TranslatedPref = netip.MustParsePrefix("::ffff:0:0:0/96") // RFC 2765 SIIT
	sixToFourPrefix  = netip.MustParsePrefix("2002::/16")       // RFC 3056
)

// isForbiddenAddr: addresses no endpoint may have, directly or embedded in an
// IPv6 address (IPv4-mapped, IPv4-compatible, SIIT, NAT64, 6to4).
func isForbiddenAddr(addr netip.Addr) bool {
	addr = addr.WithZone("").Unmap()
	if v4, ok := embeddedIPv4(addr); ok && isForbiddenAddr(v4) {
		return true
	}
	return addr.IsLinkLocalUnicast() || addr.IsLinkLocalMulticast() ||
		addr.IsInterfaceLocalMulticast() || addr.IsMulticast() || addr.IsUnspecified() ||
		thisNetwork.Contains(addr) || slices.Contains(metadataAddrs, addr)
}

// embeddedIPv4 returns the IPv4 address an IPv6 address carries.
func embeddedIPv4(addr netip.Addr) (netip.Addr, bool) {
	if !addr.Is6() {
		return netip.Addr{}, false
	}
	b := addr.As16()
	switch {
	case addr == netip.IPv6Loopback() || addr == netip.IPv6Unspecified():
		// ::1 and :: are in ::/96 but are not IPv4-compatible addresses.
		return netip.Addr{}, false
	case nat64Prefix.Contains(addr), v4CompatPrefix.Contains(addr), v4TranslatedPref.Contains(addr):
		return netip.AddrFrom4([4]byte(b[12:16])), true
	case sixToFourPrefix.Contains(addr):
		return netip.AddrFrom4([4]byte(b[2:6])), true
	}
	return netip.Addr{}, false
}

// refuseForbiddenAddrs runs after DNS resolution, so a name that resolves to a
// forbidden address is refused as well as a literal one.
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
		return fmt.Errorf("refusing to connect to %s: link-local, metadata, multicast or unspecified address", addr)
	}
	return nil
}

type proxyFunc func(*http.Request) (*url.URL, error)

type lookupFunc func(ctx context.Context, network, host string) ([]netip.Addr, error)

// checkedProxy applies the address policy to the target of a proxied
// request. Through a proxy the dialer only sees the proxy's address, so
// without this HTTPS_PROXY would reach any address the proxy can. A literal
// address is checked as is; a name is resolved here and refused if any of its
// addresses is forbidden, or if it does not resolve at all (the policy cannot
// be checked then). The proxy resolves the name again, so a name whose DNS
// answer changes in between is not covered.
func checkedProxy(proxy proxyFunc, lookup lookupFunc) proxyFunc {
	return func(req *http.Request) (*url.URL, error) {
		p, err := proxy(req)
		if err != nil || p == nil {
			// Direct connections are checked at dial time.
			return p, err
		}
		if err := checkProxiedTarget(req.Context(), req.URL.Hostname(), lookup); err != nil {
			return nil, err
		}
		return p, nil
	}
}

func checkProxiedTarget(ctx context.Context, host string, lookup lookupFunc) error {
	if addr, err := netip.ParseAddr(host); err == nil {
		if isForbiddenAddr(addr) {
			return fmt.Errorf("refusing to proxy a request to %s: link-local, metadata, multicast or unspecified address", addr)
		}
		return nil
	}
	if endsInNumber(host) {
		return fmt.Errorf("refusing to proxy a request to %q: non-canonical numeric host", host)
	}
	addrs, err := lookup(ctx, "ip", host)
	if err != nil || len(addrs) == 0 {
		return fmt.Errorf("refusing to proxy a request to %q: it does not resolve here, so the address policy cannot be checked", host)
	}
	for _, a := range addrs {
		if isForbiddenAddr(a) {
			return fmt.Errorf("refusing to proxy a request to %q: it resolves to %s, a link-local, metadata, multicast or unspecified address", host, a)
		}
	}
	return nil
}

// errRedirect is returned for any 3xx answer: following a redirect could
// carry credentials to a host the operator never configured.
var errRedirect = errors.New("upstream answered with a redirect; redirects are not followed")

// NewHTTPClient returns the HTTP client every upstream call uses. caPEM, when
// set, replaces the system roots. timeout bounds each whole request.
//
// It uses the proxy from the environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY)
// and applies the endpoint address policy both at dial time and, for proxied
// requests, to the target before the proxy is used (see checkedProxy): a
// proxied target name must then resolve from this host.
func NewHTTPClient(caPEM string, timeout time.Duration) (*http.Client, error) {
	return newHTTPClient(caPEM, timeout, http.ProxyFromEnvironment, net.DefaultResolver.LookupNetIP)
}

// newHTTPClient is NewHTTPClient with the proxy and resolver as seams:
// ProxyFromEnvironment reads the environment once per process.
func newHTTPClient(caPEM string, timeout time.Duration, proxy proxyFunc, lookup lookupFunc) (*http.Client, error) {
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
		Proxy:                 checkedProxy(proxy, lookup),
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
