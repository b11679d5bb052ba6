# oauth-ci: CI jobs that log in with AppRole and read upstream access tokens
# from the roles whose names start with "ci-" (oauth/roles/ci-*).
#
#   vault policy write oauth-ci docs/policies/ci.hcl
#   vault write auth/approle/role/ci token_policies=oauth-ci \
#       token_ttl=15m token_max_ttl=1h secret_id_ttl=10m secret_id_num_uses=1
#
# The glob makes every role an operator names ci-... available to every job
# that holds this policy: naming a role is granting it. For a job that must
# reach only one role, replace the glob with that role's name.
#
# When the job ends, `vault token revoke -self` (allowed by Vault's default
# policy) revokes the job's token and with it every lease it read: the
# engine then revokes the tokens upstream where it can.

path "oauth/creds/ci-*" {
  capabilities = ["read"]
}

# Renew and revoke its own leases (see consumer.hcl).
path "sys/leases/renew/oauth/creds/ci-*" {
  capabilities = ["update"]
}

path "sys/leases/revoke/oauth/creds/ci-*" {
  capabilities = ["update"]
}
