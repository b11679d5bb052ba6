# oauth-operator: runs the OAuth secrets engine mounted at oauth/.
#
#   vault policy write oauth-operator docs/policies/operator.hcl
#
# PRIVILEGED. Whoever can write oauth/providers/* decides where the engine
# sends refresh tokens and the client secret, and oauth/grants/* delete with
# force=true erases a grant without revoking it upstream. Grant this policy
# as you would grant root on this mount (docs/security.md).
#
# It grants nothing under oauth/creds/: operators configure the engine,
# consumers (consumer.hcl, ci.hcl) read tokens. Nor does it grant anything
# on the mount itself (sys/mounts/oauth, tune, disable) or on policies.

# Mount-wide settings. The path has no existence check: a write is an update.
path "oauth/config" {
  capabilities = ["read", "update"]
}

# Providers: endpoints, client_id, and the write-only client_secret and
# client_private_key. LIST oauth/providers is covered by the glob.
path "oauth/providers/*" {
  capabilities = ["create", "read", "update", "delete", "list"]
}

# Grants: import a refresh token, exchange a code, change lifecycle
# settings, read metadata, delete (with or without force=true), and start
# the browser and device flows (grants/NAME/authorize, grants/NAME/device).
path "oauth/grants/*" {
  capabilities = ["create", "read", "update", "delete", "list"]
}

# Roles: what oauth/creds/NAME issues.
path "oauth/roles/*" {
  capabilities = ["create", "read", "update", "delete", "list"]
}

# New sealing key; every sealed value is re-sealed under it.
path "oauth/keys/rotate" {
  capabilities = ["update"]
}

# Run the lifecycle sweep now, and see the last one.
path "oauth/tidy" {
  capabilities = ["update"]
}

path "oauth/tidy/status" {
  capabilities = ["read"]
}

# Incident response: list and revoke the leases the engine issued, per role
# (vault list sys/leases/lookup/oauth/creds/ROLE/,
#  vault lease revoke -prefix oauth/creds/ROLE). Vault requires sudo here.
path "sys/leases/lookup/oauth/creds/*" {
  capabilities = ["list", "sudo"]
}

path "sys/leases/revoke-prefix/oauth/creds/*" {
  capabilities = ["update", "sudo"]
}
