"""The Socket.IO edge: auth, triggers, acks on projection, displays."""
