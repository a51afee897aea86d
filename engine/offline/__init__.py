"""Offline work at dataset scale on Ray Data: a file of requests grounded by a pool of actors
(one GroundingEngine each), and a collection of videos turned into I3D features by a pool of
actors (one extractor each). `seqpan ground --ray` and `seqpan extract-features --ray` drive them."""
