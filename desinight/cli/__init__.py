"""Command line: a thin layer over library calls; the only place errors become exit codes."""
