"""harmprune: B-TAP replication package."""
