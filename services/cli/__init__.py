"""`rdisplay`, the command line (SPEC section 8): one module per verb, `main` in `main.py`."""
