"""The business of triggers and screens: edge, worker, CLI and their wiring."""
