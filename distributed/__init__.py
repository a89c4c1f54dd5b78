"""Running on a Ray cluster, or on Ray started on this machine."""
