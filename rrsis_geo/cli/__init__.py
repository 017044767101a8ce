"""The ``rrsis`` command line (Typer); thin: it parses, calls the library and reports."""
