"""Development tools of pilip (run from the repository root; not part of the wheel)."""
