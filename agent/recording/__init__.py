"""Reading a recording back: the parquet the recorder wrote, rebuilt into what a live agent would answer."""
