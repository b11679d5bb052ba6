package backend

import (
	"context"
	"maps"
	"slices"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

func pathTidy(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "tidy$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
				OperationVerb:   "tidy",
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: forwarded(b.pathTidyWrite),
			},
			HelpSynopsis:    "Run the lifecycle sweep now.",
			HelpDescription: tidyHelp,
		},
		{
			Pattern: "tidy/status$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
				OperationSuffix: "tidy-status",
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{Callback: b.pathTidyStatus},
			},
			HelpSynopsis:    "Show the last lifecycle sweep.",
			HelpDescription: tidyHelp,
		},
	}
}

func (b *backend) pathTidyWrite(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	st := b.background.sweep(detached(ctx), req.Storage)
	return b.tidyResponse(ctx, req.Storage, st)
}

func (b *backend) pathTidyStatus(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	return b.tidyResponse(ctx, req.Storage, b.background.lastStatus())
}

// tidyResponse shows a sweep and the sealing keys: more than one version
// means keys/rotate kept an old key that stored values still name.
func (b *backend) tidyResponse(ctx context.Context, s logical.Storage, st tidyStatus) (*logical.Response, error) {
	kr, err := b.sealingKeys(ctx, s)
	if err != nil {
		return nil, err
	}
	versions := slices.Sorted(maps.Keys(kr.Keys))
	data := st.data()
	data["sealing_key_versions"] = versions
	data["unsaved_grants"] = len(b.unsavedGrantNames())
	return &logical.Response{Data: data}, nil
}

func (st tidyStatus) data() map[string]any {
	return map[string]any{
		"replaced_tokens_queued": st.Replaced,
		"started_at":             formatTime(st.StartedAt),
		"duration_ms":            st.Duration.Milliseconds(),
		"queued_revocations":     st.Queued,
		"revocations_attempted":  st.Attempted,
		"revocations_succeeded":  st.Revoked,
		"revocations_failed":     st.Failed,
		"grants_checked":         st.DueChecked,
		"next_due":               formatTime(st.NextDue),
		"last_error":             st.LastError,
		"sweeps_since_plugin_up": st.SweepsTotal,
	}
}

const tidyHelp = `
The lifecycle sweep expires grants past max_age or idle_timeout, refreshes
grants whose keep_alive has come, and retries queued upstream revocations
(grants deleted while their provider was unreachable, expired grants). It
finds them through an index of due times, never by reading every grant.
It also stores grants whose write failed after a refresh (unsaved_grants),
revokes refresh tokens that a new authorization replaced, and gives up
pending grants whose authorization never completed. It runs every
tidy_interval (config) on the node that can write; tidy runs it now and
returns what it did; tidy/status shows the last sweep and the sealing key
versions in use (more than one: keys/rotate kept an old key that a stored
value still names; run keys/rotate again).
`
