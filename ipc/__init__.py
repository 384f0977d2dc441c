"""The IPC library: frames (framing.py), the envelope (envelope.py), error codes (errors.py),
schemas (schema.py), the verb declarations (verbs/, one module per domain) and a blocking
channel for single-conversation peers (channel.py)."""
