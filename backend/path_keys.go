package backend

import (
	"context"
	"fmt"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

func pathKeysRotate(b *backend) *framework.Path {
	return &framework.Path{
		Pattern: "keys/rotate$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
			OperationVerb:   "rotate",
			OperationSuffix: "sealing-key",
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.UpdateOperation: forwarded(b.pathKeysRotate),
		},
		HelpSynopsis:    "Rotate the key that seals refresh tokens and re-seal everything.",
		HelpDescription: keysRotateHelp,
	}
}

func (b *backend) pathKeysRotate(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	rot, err := b.rotateKeys(detached(ctx), req.Storage)
	if err != nil {
		return nil, err
	}
	resp := &logical.Response{Data: map[string]any{
		"key_version":           rot.KeyVersion,
		"grants_resealed":       rot.Resealed["grant"],
		"providers_resealed":    rot.Resealed["provider"],
		"shared_resealed":       rot.Resealed["shared token"],
		"outstanding_resealed":  rot.Resealed["outstanding token"],
		"pending_resealed":      rot.Resealed["pending authorization"],
		"retained_key_versions": nonNilInts(rot.Retained),
		"values_on_old_keys":    nonNil(rot.Stale),
		"duration_ms":           rot.Duration.Milliseconds(),
	}}
	if len(rot.Retained) > 0 {
		resp.Warnings = []string{fmt.Sprintf("old sealing key versions %v were kept: stored values still name them (%s); run keys/rotate again", rot.Retained, strings.Join(rot.Stale, ", "))}
	}
	return resp, nil
}

func nonNilInts(s []int) []int {
	if s == nil {
		return []int{}
	}
	return s
}

const keysRotateHelp = `
Creates a new AES-256-GCM sealing key and re-seals every refresh token,
client secret, private key, pending authorization secret and stored access
token under it. It then reads every sealed value again and retires the old
keys only if none still names them; otherwise it keeps them, names the
values in values_on_old_keys and retained_key_versions (tidy/status shows
the retained versions too), and running keys/rotate again finishes the job.
`
