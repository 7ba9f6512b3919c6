"""The key admin API: the `/-/api/` sub-application, one module per resource."""
