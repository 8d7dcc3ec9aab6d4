"""The REST API's blueprints: transport only (routes, auth, validation); the work is in ``domain``."""
