package backend

// Lifecycle events: one info line in the Vault server log for each step in
// a grant's life, always with the same keys (event, grant, grant_id,
// provider, owner_entity_id, reason), so that a SIEM can follow a grant
// from the log alone. No event carries a token.
const (
	eventCreated          = "grant.created"           // a grant record was stored for the first time
	eventAuthorized       = "grant.authorized"        // a refresh token was imported, or a flow completed
	eventRotated          = "grant.rotated"           // a refresh returned a new refresh token
	eventInvalid          = "grant.invalid"           // the upstream refused the token, or a flow failed
	eventExpired          = "grant.expired"           // max_age or idle_timeout ran out
	eventOwnerOffboarded  = "grant.owner_offboarded"  // a use was refused: the owner entity is disabled or gone
	eventRevocationQueued = "grant.revocation_queued" // deleted or expired: its refresh token awaits revocation
	eventRevoked          = "grant.revoked"           // the refresh token was revoked upstream (or could not be)
	eventRevocationFailed = "grant.revocation_failed" // an upstream revocation attempt failed; it is retried
	eventNotRevocable     = "grant.not_revocable"     // the provider cannot revoke it; nothing was revoked upstream
)

// lifecycle logs one event of g's life and counts it.
func (b *backend) lifecycle(event string, g *grantEntry, reason string) {
	b.metrics.lifecycleEvents.inc(event)
	b.logger.Info("grant lifecycle", "event", event, "grant", g.Name, "grant_id", g.ID,
		"provider", g.Provider, "owner_entity_id", g.OwnerEntityID, "reason", reason)
}

// statusEvents are the events a stored change of status from prev means.
// Becoming active is logged where it happens (eventAuthorized), with how.
func statusEvents(prev string, g *grantEntry) []string {
	var events []string
	if prev == "" {
		events = append(events, eventCreated)
	}
	switch g.Status {
	case statusInvalid:
		events = append(events, eventInvalid)
	case statusExpired:
		if prev != statusExpired {
			events = append(events, eventExpired, eventRevocationQueued)
		}
	case statusRevoking:
		events = append(events, eventRevocationQueued)
	}
	return events
}
