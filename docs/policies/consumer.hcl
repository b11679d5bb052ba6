# oauth-consumer: one service that reads upstream access tokens from the
# role oauth/roles/reader. Copy it per service and replace "reader" with the
# service's role(s); keep one role per line rather than a glob, so that a
# role an operator adds later is not granted by accident.
#
#   vault policy write oauth-consumer docs/policies/consumer.hcl
#
# The service gets nothing else of the engine: no providers, grants, roles,
# config, keys or tidy, and no other role's creds.

# Issue a leased access token.
path "oauth/creds/reader" {
  capabilities = ["read"]
}

# Renew its own leases. Vault's default policy already allows
# sys/leases/renew with a lease_id in the body, for any lease ID the caller
# knows; this adds the path form, for tokens without the default policy.
# The engine re-verifies the grant, its owner and the role at every renewal.
path "sys/leases/renew/oauth/creds/reader/*" {
  capabilities = ["update"]
}

# Revoke its own leases early, which revokes the token upstream where the
# lease says revocation=on_lease_end. `vault lease revoke LEASE_ID` uses the
# path form; API clients that send lease_id in the body use the second rule.
path "sys/leases/revoke/oauth/creds/reader/*" {
  capabilities = ["update"]
}

path "sys/leases/revoke" {
  capabilities = ["update"]
  allowed_parameters = {
    "lease_id" = ["oauth/creds/reader/*"]
    "sync"     = []
  }
}
