"""Generated from protos/; never edit by hand (make proto)."""
