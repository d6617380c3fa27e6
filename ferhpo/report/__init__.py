"""Reports: ranking, statistics and figures, from the results store only (never keras)."""
