"""Deal rooms: a channel per high-value opportunity, created, staffed, kept current and archived.

Platform-neutral: chat platforms are reached through `deal_rooms.port.ChatPort` only.
"""
