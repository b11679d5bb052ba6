package backend

import (
	"context"
	"net/http"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

const (
	metricsFormatPrometheus = "prometheus"
	metricsFormatJSON       = "json"
)

func pathMetrics(b *backend) *framework.Path {
	return &framework.Path{
		Pattern: "metrics$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
			OperationVerb:   "read",
			OperationSuffix: "metrics",
		},
		Fields: map[string]*framework.FieldSchema{
			"format": {
				Type:          framework.TypeString,
				Description:   "prometheus (text exposition format, the default) or json.",
				Default:       metricsFormatPrometheus,
				AllowedValues: []any{metricsFormatPrometheus, metricsFormatJSON},
				Query:         true,
			},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{Callback: b.pathMetricsRead},
		},
		HelpSynopsis:    "The engine's metrics, for a Prometheus scrape job with a Vault token.",
		HelpDescription: metricsHelp,
	}
}

func (b *backend) pathMetricsRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	gauges, err := b.metricGauges(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if d.Get("format").(string) == metricsFormatJSON {
		return &logical.Response{Data: b.metrics.jsonView(gauges)}, nil
	}
	return &logical.Response{Data: map[string]any{
		logical.HTTPContentType: "text/plain; version=0.0.4; charset=utf-8",
		logical.HTTPRawBody:     []byte(b.metrics.prometheusText(gauges)),
		logical.HTTPStatusCode:  http.StatusOK,
	}}, nil
}

const metricsHelp = `
The engine's own metrics (Vault's sys/metrics cannot carry an external
plugin's): creds issued by role and outcome, refreshes by provider and
outcome, upstream latency histograms by provider and endpoint, rotations,
lease revocations, keep-alive refreshes, interrupted refreshes, sweeps, and
gauges read at scrape time (grants by status, the revocation queue and the
age of its oldest entry, pending authorizations, unsaved grants).

Counters are this node's since its plugin started; scrape every node.
format=prometheus (default) answers in the Prometheus text format, for a
scrape job with metrics_path /v1/<mount>/metrics and a Vault token;
format=json answers the same as JSON. Labels carry only role, provider and
status names and fixed words; each metric keeps at most 500 label sets and
counts the rest under "_other".
`
