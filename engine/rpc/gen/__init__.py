"""Generated from ../orchard.proto, ../engine.proto by scripts/gen_proto.py."""
