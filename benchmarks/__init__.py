"""pyapp's benchmarks: ``python3 build.py bench`` runs every ``bench_*.py`` module here."""
