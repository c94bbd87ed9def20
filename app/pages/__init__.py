"""One page per step of the sidebar; names mirror the engine part each one shows."""
