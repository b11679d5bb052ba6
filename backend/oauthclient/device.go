package oauthclient

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"time"
)

// DeviceAuthorization is an RFC 8628 §3.2 device authorization response.
type DeviceAuthorization struct {
	DeviceCode              string
	UserCode                string
	VerificationURI         string
	VerificationURIComplete string
	// Expiry is at most MaxDeviceFlowLifetime ahead; zero when the server
	// gave no usable expires_in (the caller picks a lifetime).
	Expiry time.Time
	// Interval is within [MinDeviceInterval, MaxDeviceInterval];
	// DefaultDeviceInterval when the server gave none.
	Interval time.Duration
}

// Bounds applied to a device authorization response, so that an upstream
// cannot keep a pending flow (and its device code) around for years, or make
// the engine poll too often or practically never.
const (
	MaxDeviceFlowLifetime = 30 * time.Minute
	DefaultDeviceInterval = 5 * time.Second // RFC 8628 §3.2
	MinDeviceInterval     = time.Second
	MaxDeviceInterval     = time.Minute
)

// ErrNoDeviceEndpoint means the server offers no device flow.
var ErrNoDeviceEndpoint = errors.New("the provider has no device authorization endpoint")

// StartDevice begins a device flow (RFC 8628 §3.1).
func (c *Client) StartDevice(ctx context.Context, scopes []string) (*DeviceAuthorization, error) {
	if c.cfg.Endpoints.DeviceAuthorization == "" {
		return nil, ErrNoDeviceEndpoint
	}
	form := url.Values{}
	if len(scopes) > 0 {
		form.Set("scope", c.joinScopes(scopes))
	}
	body, err := c.post(ctx, "device_authorization", c.cfg.Endpoints.DeviceAuthorization, form, nil)
	if err != nil {
		return nil, err
	}
	da, err := parseDeviceAuthorization(body.data, time.Now())
	if err != nil {
		return nil, &Error{Endpoint: "device_authorization", StatusCode: body.status, Err: err}
	}
	return da, nil
}

func parseDeviceAuthorization(data []byte, now time.Time) (*DeviceAuthorization, error) {
	var raw struct {
		DeviceCode              string          `json:"device_code"`
		UserCode                string          `json:"user_code"`
		VerificationURI         string          `json:"verification_uri"`
		VerificationURL         string          `json:"verification_url"` // Google's spelling
		VerificationURIComplete string          `json:"verification_uri_complete"`
		ExpiresIn               json.RawMessage `json:"expires_in"`
		Interval                json.RawMessage `json:"interval"`
	}
	if err := json.Unmarshal(data, &raw); err != nil || raw.DeviceCode == "" || raw.UserCode == "" {
		return nil, errors.New("malformed device authorization response")
	}
	lifetime, err := parseJSONSeconds(raw.ExpiresIn, MaxDeviceFlowLifetime)
	if err != nil {
		return nil, errors.New("device authorization response has a malformed expires_in")
	}
	interval, err := parseJSONSeconds(raw.Interval, MaxDeviceInterval)
	if err != nil {
		return nil, errors.New("device authorization response has a malformed interval")
	}
	da := &DeviceAuthorization{
		DeviceCode:              raw.DeviceCode,
		UserCode:                raw.UserCode,
		VerificationURI:         raw.VerificationURI,
		VerificationURIComplete: raw.VerificationURIComplete,
		Interval:                max(interval, MinDeviceInterval),
	}
	if lifetime > 0 {
		da.Expiry = now.Add(lifetime)
	}
	if da.VerificationURI == "" {
		da.VerificationURI = raw.VerificationURL
	}
	if interval == 0 {
		da.Interval = DefaultDeviceInterval
	}
	return da, nil
}

// PollDevice makes one device access token request (RFC 8628 §3.4). Pending
// authorizations come back as errors with code authorization_pending or
// slow_down; the caller schedules the next poll.
func (c *Client) PollDevice(ctx context.Context, deviceCode string) (*Token, error) {
	form := url.Values{
		"grant_type":  {"urn:ietf:params:oauth:grant-type:device_code"},
		"device_code": {deviceCode},
	}
	return c.token(ctx, form, deviceCode)
}
