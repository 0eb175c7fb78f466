"""Engine span intake: the wire format engines write and the request book built from it."""
