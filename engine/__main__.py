"""python -m gpusleuth.engine serve|generate ..."""
from gpusleuth.engine.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
