"""Pure logic: no I/O, no numpy. Everything here is testable on plain values."""
