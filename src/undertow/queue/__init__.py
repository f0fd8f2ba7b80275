"""The job queue: durable jobs on the cluster backend, and workers that run them."""
