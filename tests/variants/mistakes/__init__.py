"""Single-mistake implementations written as plain functions (no step functions for the judge to look at),
for the mutation matrix (tests/matrix.py): the detectors must find the mistake from the attention functions'
own outputs."""
