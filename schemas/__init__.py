"""Pure msgspec structs: wire payloads, stream entries and events. No I/O here."""
