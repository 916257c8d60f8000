"""pgqueue's benchmarks: pgqueue's own figures measured against PostgreSQL's ceiling.

Run ``python -m benchmarks.run [--quick] [--runs N] [--dsn URL]``; see ``docs/performance.md``.
``python -m benchmarks.profile_drain`` profiles one worker draining a backlog.
"""
