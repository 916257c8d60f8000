"""One behavioural suite for every driver (postgres, memory, redis), skipping by capability."""
