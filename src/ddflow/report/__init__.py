"""Stage 6: paper tables (tables.py, timing.py), figures (figures.py) and ISA's analyses (isa.py), from records."""
