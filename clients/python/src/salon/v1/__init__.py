"""Generated from protos/salon/v1 by scripts/gen_protos.py. Do not edit."""
