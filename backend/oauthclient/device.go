package oauthclient

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"time"
)

// DeviceAuthorization is an RFC 8628 §3.2 device authorization response.
type DeviceAuthorization struct {
	DeviceCode              string
	UserCode                string
	VerificationURI         string
	VerificationURIComplete string
	Expiry                  time.Time
	Interval                time.Duration
}

// ErrNoDeviceEndpoint means the server offers no device flow.
var ErrNoDeviceEndpoint = errors.New("the provider has no device authorization endpoint")

// StartDevice begins a device flow (RFC 8628 §3.1).
func (c *Client) StartDevice(ctx context.Context, scopes []string) (*DeviceAuthorization, error) {
	if c.cfg.Endpoints.DeviceAuthorization == "" {
		return nil, ErrNoDeviceEndpoint
	}
	form := url.Values{}
	if len(scopes) > 0 {
		form.Set("scope", strings.Join(scopes, " "))
	}
	body, err := c.post(ctx, "device_authorization", c.cfg.Endpoints.DeviceAuthorization, form, nil)
	if err != nil {
		return nil, err
	}
	var raw struct {
		DeviceCode              string `json:"device_code"`
		UserCode                string `json:"user_code"`
		VerificationURI         string `json:"verification_uri"`
		VerificationURL         string `json:"verification_url"` // Google's spelling
		VerificationURIComplete string `json:"verification_uri_complete"`
		ExpiresIn               int64  `json:"expires_in"`
		Interval                int64  `json:"interval"`
	}
	if err := json.Unmarshal(body.data, &raw); err != nil || raw.DeviceCode == "" || raw.UserCode == "" {
		return nil, &Error{Endpoint: "device_authorization", StatusCode: body.status, Err: errors.New("malformed device authorization response")}
	}
	da := &DeviceAuthorization{
		DeviceCode:              raw.DeviceCode,
		UserCode:                raw.UserCode,
		VerificationURI:         raw.VerificationURI,
		VerificationURIComplete: raw.VerificationURIComplete,
		Expiry:                  time.Now().Add(time.Duration(raw.ExpiresIn) * time.Second),
		Interval:                time.Duration(raw.Interval) * time.Second,
	}
	if da.VerificationURI == "" {
		da.VerificationURI = raw.VerificationURL
	}
	if da.Interval <= 0 {
		da.Interval = 5 * time.Second // RFC 8628 §3.2 default
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
