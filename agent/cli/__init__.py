"""The `agent` command. The only part of agent/ that may import engine/, tui/ and exporters/."""
