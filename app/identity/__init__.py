"""Identity: VNeID-style OpenID Connect login, the backend's own tokens, sessions, roles and clients."""
