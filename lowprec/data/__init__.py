"""Data layer: token shards, tokenizers, corpus building and the deterministic Grain input pipeline.

Modules: shards (token files), tokenizers (bytes, BPE), sources (where documents come from),
corpus (build train/val shards + meta.json), synthetic (learnable test corpora), dataset
(DataConfig, train_dataset, val_batches), cli (`lowprec data build`).
"""
