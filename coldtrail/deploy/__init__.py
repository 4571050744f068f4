"""What a production deployment needs besides the services: broker credentials and ACLs,
TLS certificates. The compose file and its configuration live in ``deploy/`` at the top."""
