"""Configuration: the settings (the only reader of the environment) and the JWT keys."""
