"""Generated from ../orchard.proto by scripts/gen_proto.py."""
