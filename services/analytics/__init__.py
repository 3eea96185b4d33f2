"""The analysts' library: typed reads of the event log, stats, projections rebuilt."""
