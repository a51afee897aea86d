"""Video files → I3D features as the original SeqPAN/VSLNet preparation made them."""
