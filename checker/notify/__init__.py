"""Notifications: routes, the messages they carry, and delivery from the outbox."""
