"""`python -m conformance.autograder`: a Gradescope autograder bundle for a course rubric (and, inside
Gradescope's container, the grading of one submission). See conformance/teaching/autograder.py."""

from conformance.teaching.autograder import main

if __name__ == "__main__":
    raise SystemExit(main())
