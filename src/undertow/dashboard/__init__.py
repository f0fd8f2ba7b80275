"""The dashboard: a live page of the cluster, built on the public API below it."""
