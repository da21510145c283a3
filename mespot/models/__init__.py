"""Networks: per-frame backbones, the temporal FPN neck and the anchor-free head."""
