"""Network probe: tc microbursts, TCP retransmits and drops, qdisc statistics."""
