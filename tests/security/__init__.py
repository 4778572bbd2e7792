"""Security suite (issue 7): TLS, credentials, tenant isolation and hostile input."""
