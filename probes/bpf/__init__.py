"""bcc plumbing shared by every eBPF probe: host checks, compiling, map drains, the event buffer."""
