"""Process wiring: running edge and worker in one process, the embedded Valkey."""
